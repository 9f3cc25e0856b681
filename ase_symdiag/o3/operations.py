"""O(3) operations: Haar-random sampling (every sampler lives here) and validation of user matrices.

Convention (used throughout ase-symdiag): positions are rows and an operation
``R`` (3x3, orthogonal, det +1 proper / -1 improper) acts as ``x' = x R^T``; the
cell rotates with the atoms, ``cell' = cell R^T``.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy.spatial.transform import Rotation

from ase_symdiag.errors import RotationError, UsageError

#: tolerance on ``|R R^T - 1|`` for a user matrix to be accepted as orthogonal
ORTHOGONALITY_TOL = 1e-8


def validate_rotations(rotations: Iterable | np.ndarray, *, tol: float = ORTHOGONALITY_TOL) -> np.ndarray:
    """Return ``rotations`` as a float64 ``(K, 3, 3)`` array, checking orthogonality.

    Raises :class:`RotationError` naming the first offending matrix.
    """
    try:
        array = np.asarray(rotations, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise RotationError(f"rotations must be numeric 3x3 matrices: {error}") from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (3, 3):
        raise RotationError(
            f"rotations must have shape (3, 3) or (K, 3, 3), got {tuple(array.shape)}"
        )
    if not np.all(np.isfinite(array)):
        raise RotationError("rotation matrices contain NaN or infinite entries")
    deviation = np.abs(array @ array.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    bad = np.nonzero(deviation > tol)[0]
    if len(bad) > 0:
        k = int(bad[0])
        raise RotationError(
            f"matrix {k} is not orthogonal: max |R R^T - 1| = {deviation[k]:.3g} "
            f"(tolerance {tol:g}); pass proper or improper rotations only"
        )
    return array


def haar_rotations(n: int, seed: int | None = 0, *, include_inversion: bool = True) -> np.ndarray:
    """``n`` Haar-uniform O(3) operations, ``(n, 3, 3)`` float64.

    With ``include_inversion=True`` every second operation (odd indices) is multiplied by
    the inversion ``-1``, so proper and improper operations are sampled equally.
    The same ``seed`` always gives the same operations: SciPy's
    ``Rotation.random`` (normalised Gaussian quaternions, Haar on SO(3)), kept so
    that seeded results (README transcripts, reference numbers) stay as published;
    single draws and the MD sampler use :func:`haar_from_gaussian`.
    """
    if n < 0:
        raise UsageError(f"number of rotations must be >= 0, got {n}")
    if n == 0:
        return np.zeros((0, 3, 3))
    matrices = Rotation.random(n, random_state=seed).as_matrix().reshape(n, 3, 3)
    if include_inversion:
        matrices[1::2] *= -1.0
    return np.ascontiguousarray(matrices)


def haar_from_gaussian(gaussian: np.ndarray, include_inversion: bool) -> np.ndarray:
    """Haar-random O(3) operations ``(..., 3, 3)`` float64 from standard-normal matrices
    ``gaussian`` ``(..., 3, 3)``: the one sampling definition of ase-symdiag (its torch
    form, :func:`ase_symdiag.o3.torch_operations.haar_from_gaussian`, gives the same
    matrices from the same draws; tested).

    QR decomposition ``Z = Q R`` with the signs of ``R``'s diagonal moved into ``Q``
    (Mezzadri 2007), which makes ``Q`` Haar on O(3): proper and improper with
    probability 1/2 each. With ``include_inversion=False`` an improper ``Q`` is replaced by
    ``-Q`` (Haar on SO(3)).
    """
    q, r = np.linalg.qr(np.asarray(gaussian, dtype=np.float64))
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    if not include_inversion:
        q = np.where((np.linalg.det(q) < 0)[..., None, None], -q, q)
    return q


def random_operation(rng: np.random.Generator, include_inversion: bool) -> np.ndarray:
    """One Haar-random O(3) operation (or SO(3) with ``include_inversion=False``), ``(3, 3)``
    float64: :func:`haar_from_gaussian` of 9 normals drawn from ``rng`` per call, so
    the same generator state always gives the same operation.
    """
    return haar_from_gaussian(rng.standard_normal((3, 3)), include_inversion)
