"""How outputs transform under an O(3) operation R (``x' = x R^T``).

Scalars are invariant; vectors (rows) go ``v -> v R^T``; rank-2 Cartesian tensors
go ``S -> R S R^T``. The *back-rotation* ``rho(R)^-1`` undoes this: ``v' R`` and
``R^T S' R``. All functions are batched over a leading operation axis K and work
on numpy arrays or torch tensors alike.
"""

from __future__ import annotations

import numpy as np

#: 1 GPa in eV/Å^3: 1e9 Pa * 1e-30 m^3/Å^3 / 1.6021766208e-19 J/eV (CODATA 2014, the
#: value of ``ase.units.GPa``, bit for bit); stress in eV/Å^3 divided by it is in GPa
GPA = 1.0 / 160.21766208


def rotate_vectors(vectors, rotations):
    """``v R^T`` for vectors (K, N, 3) and rotations (K, 3, 3)."""
    return vectors @ _transpose(rotations)


def back_rotate_vectors(vectors, rotations):
    """``v R`` (undo :func:`rotate_vectors`) for (K, N, 3) and (K, 3, 3)."""
    return vectors @ rotations


def rotate_tensors(tensors, rotations):
    """``R S R^T`` for tensors (K, 3, 3)."""
    return rotations @ tensors @ _transpose(rotations)


def back_rotate_tensors(tensors, rotations):
    """``R^T S R`` (undo :func:`rotate_tensors`) for (K, 3, 3)."""
    return _transpose(rotations) @ tensors @ rotations


def _transpose(matrices):
    if isinstance(matrices, np.ndarray):
        return np.swapaxes(matrices, -1, -2)
    return matrices.transpose(-1, -2)


def voigt_from_tensor(stress: np.ndarray) -> np.ndarray:
    """3x3 -> Voigt 6 (xx, yy, zz, yz, xz, xy), averaging each off-diagonal pair.

    Works on (..., 3, 3). Matches ``metatomic_ase`` (ASE's own helper keeps only
    one of the two off-diagonal entries).
    """
    s = np.asarray(stress)
    return np.stack(
        [
            s[..., 0, 0],
            s[..., 1, 1],
            s[..., 2, 2],
            0.5 * (s[..., 1, 2] + s[..., 2, 1]),
            0.5 * (s[..., 0, 2] + s[..., 2, 0]),
            0.5 * (s[..., 0, 1] + s[..., 1, 0]),
        ],
        axis=-1,
    )
