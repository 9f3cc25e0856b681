"""Irreducible representations of O(3): real Wigner-D matrices and channel averages.

The channels of O(3) are labelled ``(l, sigma)``: angular degree ``l >= 0`` and parity
``sigma = +1/-1`` (even/odd under the inversion). Their matrices are

    ``D^{l,sigma}(R) = D^l(proper part of R) * (sigma if det R < 0 else 1)``,

with ``D^l`` the real-basis Wigner-D matrix of SO(3) (``Y_l(R x) = D^l(R) Y_l(x)``).
Everything that asks "which channels does a weighted set of operations average
away?" (the exactness of a quadrature, the channels an average removes, the
invariant vectors of a finite group) asks it here, through :func:`channel_average`.
numpy and scipy only.
"""

from __future__ import annotations

import functools
from typing import Dict, Set, Tuple

import numpy as np

from ase_symdiag.errors import UsageError

#: an O(3) channel ``(l, sigma)``
Channel = Tuple[int, int]

#: orders accepted by ``scipy.integrate.lebedev_rule`` (and metatomic's choice tables)
LEBEDEV_ORDERS = (
    3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 35, 41,
    47, 53, 59, 65, 71, 77, 83, 89, 95, 101, 107, 113, 119, 125, 131,
)  # fmt: skip

#: an average below this (max abs entry) counts as exactly zero
ATOL = 1e-10


def _real_sph_harm(l: int, points: np.ndarray) -> np.ndarray:
    """Orthonormal real spherical harmonics Y_{l,m}, m = -l..l, at unit ``points``.

    Returns shape ``points.shape[:-1] + (2l+1,)``. Standard real basis:
    m>0: sqrt2 (-1)^m Re Y_l^m, m<0: sqrt2 (-1)^m Im Y_l^|m|, m=0: Y_l^0.
    """
    from scipy.special import sph_harm_y

    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    theta = np.arctan2(np.hypot(x, y), z)  # well conditioned near the poles
    phi = np.arctan2(y, x)
    ms = np.arange(0, l + 1).reshape((-1,) + (1,) * theta.ndim)
    Y = sph_harm_y(l, ms, theta[None], phi[None])  # (l+1, ...)
    out = np.empty(theta.shape + (2 * l + 1,), dtype=np.float64)
    out[..., l] = Y[0].real
    for m in range(1, l + 1):
        sign = (-1.0) ** m
        out[..., l + m] = np.sqrt(2.0) * sign * Y[m].real
        out[..., l - m] = np.sqrt(2.0) * sign * Y[m].imag
    return out


@functools.lru_cache(maxsize=None)
def _projection_nodes(l: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lebedev nodes (P, 3), weights (P,) summing to 1, and Y_l at the nodes.

    The rule is exact to degree >= 2l, so sum_p w_p Y_l(p) Y_l(p)^T = identity
    (Y_l is scaled by sqrt(4 pi) to be orthonormal for the normalised weights).
    """
    from scipy.integrate import lebedev_rule

    order = min(o for o in LEBEDEV_ORDERS if o >= max(2 * l, 3))
    X, w = lebedev_rule(order)
    pts = np.ascontiguousarray(X.T)
    w = w / w.sum()
    Y = _real_sph_harm(l, pts) * np.sqrt(4.0 * np.pi)  # orthonormal w.r.t. w
    for arr in (pts, w, Y):
        arr.flags.writeable = False
    return pts, w, Y


def wigner_D(l: int, rotations: np.ndarray) -> np.ndarray:
    """Real-basis Wigner-D matrices of shape (K, 2l+1, 2l+1).

    Defined by ``Y_l(R x) = D^l(R) @ Y_l(x)`` for the real spherical harmonics
    (order m = -l..l). For improper R this equals ``det(R)**l * D^l(proper part)``,
    i.e. the O(3) irrep of parity (-1)**l carried by Y_l. Computed exactly by
    projection onto Y_l with a Lebedev rule of order >= 2l (no fitting).
    """
    if l < 0:
        raise UsageError("l must be non-negative")
    R = np.asarray(rotations, dtype=np.float64)
    single = R.ndim == 2
    if single:
        R = R[None]
    if l == 0:
        D = np.ones((R.shape[0], 1, 1))
    else:
        pts, w, Y = _projection_nodes(l)
        rotated = np.einsum("kij,pj->kpi", R, pts)  # R p, column convention
        Yr = _real_sph_harm(l, rotated) * np.sqrt(4.0 * np.pi)  # (K, P, 2l+1)
        D = np.einsum("p,kpa,pb->kab", w, Yr, Y)
    return D[0] if single else D


def channel_basis(l: int, sigma: int, rotations: np.ndarray) -> np.ndarray:
    """``D^{l,sigma}(R)``, (K, 2l+1, 2l+1): Wigner-D of the proper part, times sigma if improper."""
    det = np.sign(np.linalg.det(rotations))
    proper = wigner_D(l, rotations) * (det**l)[:, None, None]
    factor = np.where(det < 0, float(sigma), 1.0)
    return proper * factor[:, None, None]


def channel_average(l: int, sigma: int, rotations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_k w_k D^{l,sigma}(R_k)``, (2l+1, 2l+1).

    Zero when the weighted set removes channel ``(l, sigma)`` from an average; for a
    finite group with equal weights it is the projector onto the invariant vectors,
    so its trace counts them.
    """
    return np.einsum("k,kab->ab", np.asarray(weights, dtype=np.float64), channel_basis(l, sigma, rotations))


def averages_to_zero(l: int, sigma: int, rotations: np.ndarray, weights: np.ndarray, atol: float = ATOL) -> bool:
    """Whether the weighted set averages channel ``(l, sigma)`` to zero (within ``atol``)."""
    return bool(np.abs(channel_average(l, sigma, rotations, weights)).max() < atol)


def removed_channels(rotations: np.ndarray, weights: np.ndarray, lmax: int, atol: float = ATOL) -> Set[Channel]:
    """Channels ``(l <= lmax, sigma)`` other than the invariant ``(0, +)`` that the set averages away."""
    return {
        (l, sigma)
        for l in range(lmax + 1)
        for sigma in (1, -1)
        if (l, sigma) != (0, 1) and averages_to_zero(l, sigma, rotations, weights, atol)
    }


def invariant_counts(rotations: np.ndarray, lmax: int) -> Dict[Channel, float]:
    """Number of invariant vectors of each channel ``(1 <= l <= lmax, sigma)`` under a group.

    The trace of the equal-weight :func:`channel_average`; a group average removes
    channel ``(l, sigma)`` exactly when it is 0. Parity -1 is listed only when the
    group has improper operations.
    """
    rotations = np.asarray(rotations, dtype=np.float64)
    weights = np.full(len(rotations), 1.0 / len(rotations))
    sigmas = (1, -1) if (np.linalg.det(rotations) < 0).any() else (1,)
    return {
        (l, sigma): float(np.trace(channel_average(l, sigma, rotations, weights)))
        for l in range(1, lmax + 1)
        for sigma in sigmas
    }
