"""Quadratures on the orthogonal group O(3).

Conventions (used throughout this module):

* An operation is a float64 3x3 orthogonal matrix ``R``; stacks have shape
  ``(K, 3, 3)``. It acts on row-vector positions as ``x' = x @ R.T``.
  Improper operations have ``det(R) = -1``; the inversion is ``-identity``.
* Weights are float64 arrays of shape ``(K,)`` summing to one (Haar-normalised),
  so that ``sum_k w_k f(R_k)`` approximates the Haar average of ``f`` over the group.
* Irreducible representations of O(3) are labelled ``(l, sigma)`` with
  ``sigma = +1/-1``; ``D^{l,sigma}(R) = sigma_factor * D^l(proper part of R)`` where the
  factor is ``det(R)**l`` for the natural parity ``sigma = (-1)**l`` (the action on
  spherical harmonics) and ``det(R)**(l+1)`` for the other one.
* A quadrature is "exact to degree L" when ``sum_k w_k D^{l,sigma}(R_k) = 0`` for
  every ``1 <= l <= L`` and both parities (and, if it contains improper operations,
  ``sum_k w_k det(R_k) = 0``, i.e. the pseudoscalar ``(0,-)`` is killed too). For a
  quadrature made only of proper rotations the parity is not sampled and the degree
  is its SO(3) exactness.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "O3Quadrature",
    "lebedev_quadrature",
    "grid_quadrature",
    "group_quadrature",
    "haar_random",
    "wigner_D",
    "exactness_degree",
    "smallest_exact_quadrature",
]

# Orders accepted by scipy.integrate.lebedev_rule (and metatomic's choice tables).
_LEBEDEV_ORDERS = (
    3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 35, 41,
    47, 53, 59, 65, 71, 77, 83, 89, 95, 101, 107, 113, 119, 125, 131,
)  # fmt: skip

_ATOL = 1e-10
_MAX_DEGREE_SCAN = 40


@dataclass(frozen=True)
class O3Quadrature:
    """A weighted set of O(3) operations (see the module docstring for conventions).

    ``degree`` is the largest L such that the rule integrates every irrep
    ``(l, sigma)`` with ``1 <= l <= L`` to zero (-1 when not exact, e.g. random sets).
    ``improper`` is True when the set contains the inversion coset (-R for each R).
    The arrays are stored as read-only float64 copies.
    """

    rotations: np.ndarray
    weights: np.ndarray
    degree: int
    name: str
    improper: bool

    def __post_init__(self) -> None:
        rotations = np.array(self.rotations, dtype=np.float64, copy=True)
        weights = np.array(self.weights, dtype=np.float64, copy=True)
        if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
            raise ValueError(
                f"rotations must have shape (K, 3, 3), got {rotations.shape}"
            )
        if weights.shape != (rotations.shape[0],):
            raise ValueError(
                f"weights must have shape ({rotations.shape[0]},), got {weights.shape}"
            )
        if rotations.shape[0] == 0:
            raise ValueError("a quadrature needs at least one operation")
        rotations.flags.writeable = False
        weights.flags.writeable = False
        object.__setattr__(self, "rotations", rotations)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "degree", int(self.degree))
        object.__setattr__(self, "improper", bool(self.improper))

    @property
    def size(self) -> int:
        """Number of operations K."""
        return int(self.rotations.shape[0])


# --------------------------------------------------------------------------------------
# Wigner-D matrices and exactness
# --------------------------------------------------------------------------------------


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

    order = min(o for o in _LEBEDEV_ORDERS if o >= max(2 * l, 3))
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
        raise ValueError("l must be non-negative")
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


def _irrep_sums(
    l: int, rotations: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sums of D^l for the proper Wigner-D (parity +) and D*det (parity -)."""
    det = np.linalg.det(rotations)
    D = wigner_D(l, rotations) * (np.sign(det) ** l)[:, None, None]  # proper part
    plus = np.einsum("k,kab->ab", weights, D)
    minus = np.einsum("k,kab->ab", weights * np.sign(det), D)
    return plus, minus


def _degree(rotations: np.ndarray, weights: np.ndarray, lmax: int, atol: float) -> int:
    det = np.sign(np.linalg.det(rotations))
    if np.any(det < 0) and abs(float(np.dot(weights, det))) > atol:
        return -1  # the pseudoscalar (0,-) is not integrated to zero
    for l in range(1, lmax + 1):
        plus, minus = _irrep_sums(l, rotations, weights)
        if np.max(np.abs(plus)) > atol or np.max(np.abs(minus)) > atol:
            return l - 1
    return lmax


def exactness_degree(quad: O3Quadrature, lmax: int = 12, atol: float = _ATOL) -> int:
    """Largest L <= lmax such that sum_k w_k D^{l,sigma}(R_k) ~ 0 for 1 <= l <= L.

    Both parities are tested for each l. If the set contains improper operations,
    ``sum_k w_k det(R_k)`` must vanish as well, otherwise -1 is returned. A return
    value equal to ``lmax`` means "at least lmax".
    """
    return _degree(quad.rotations, quad.weights, lmax, atol)


def _true_degree(
    rotations: np.ndarray, weights: np.ndarray, cap: int = _MAX_DEGREE_SCAN
) -> int:
    """Measured exactness degree, scanning l up to ``cap`` (== cap: a lower bound)."""
    return _degree(rotations, weights, cap, _ATOL)


def _add_inversion(
    rotations: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([rotations, -rotations], axis=0),
        np.concatenate([0.5 * weights, 0.5 * weights], axis=0),
    )


# --------------------------------------------------------------------------------------
# Lebedev x in-plane families (metatomic-ase and metatomic.torch.o3)
# --------------------------------------------------------------------------------------


def _lebedev_inplane(
    lebedev_order: int, n_inplane: int
) -> tuple[np.ndarray, np.ndarray]:
    """SO(3) rule: Lebedev node (alpha, beta) x K equispaced gamma, ZYZ Euler
    ``Rz(alpha) Ry(beta) Rz(gamma)``; same ordering as metatomic (node-major)."""
    from scipy.integrate import lebedev_rule
    from scipy.spatial.transform import Rotation

    X, w = lebedev_rule(lebedev_order)  # w sums to 4 pi
    x, y, z = X
    alpha = np.arctan2(y, x)
    beta = np.arccos(np.clip(z, -1.0, 1.0))
    gamma = np.linspace(0.0, 2 * np.pi, n_inplane, endpoint=False)
    A = np.repeat(alpha, gamma.size).reshape(-1, 1)
    B = np.repeat(beta, gamma.size).reshape(-1, 1)
    G = np.tile(gamma, alpha.size).reshape(-1, 1)
    rot = (
        Rotation.from_euler("z", A)
        * Rotation.from_euler("y", B)
        * Rotation.from_euler("z", G)
    )
    weights = np.repeat(w / (4 * np.pi * n_inplane), gamma.size)
    return rot.as_matrix(), weights


def _smallest_lebedev_order(l: int) -> int:
    if l > _LEBEDEV_ORDERS[-1]:
        raise ValueError(
            f"degree {l} exceeds the largest Lebedev order {_LEBEDEV_ORDERS[-1]}"
        )
    return min(o for o in _LEBEDEV_ORDERS if o >= l)


@functools.lru_cache(maxsize=None)
def lebedev_quadrature(degree: int, inversion: bool = True) -> O3Quadrature:
    """metatomic-ase 0.1.4 ``SymmetrizedCalculator(l_max=degree)`` operation set.

    Lebedev order = smallest available >= degree, K = 2*degree + 1 in-plane angles,
    times {identity, inversion} (ops ``[R..., -R...]``, weights halved). ``degree``
    here is metatomic-ase's ``l_max``; the returned ``.degree`` is the *measured*
    exactness degree, which can differ (it is min(lebedev order, 2*l_max) in practice,
    e.g. 2 for l_max=1 and 3 for l_max=2).
    """
    if degree < 1:
        raise ValueError("degree (l_max) must be >= 1")
    order = _smallest_lebedev_order(degree)
    R, w = _lebedev_inplane(order, 2 * degree + 1)
    if inversion:
        R, w = _add_inversion(R, w)
    name = f"lebedev(l_max={degree})"
    return O3Quadrature(R, w, _true_degree(R, w, order + 4), name, inversion)


@functools.lru_cache(maxsize=None)
def grid_quadrature(degree: int, inversion: bool = True) -> O3Quadrature:
    """metatomic.torch.o3 (``choose_quadrature`` / ``get_rotation_quadrature``) grid.

    Lebedev order = smallest available >= degree, K = degree + 1 in-plane angles;
    with ``inversion`` the set is extended to O(3) as ``[R..., -R...]`` with halved
    weights (``SymmetrizedModel`` does the same by evaluating each rotation with and
    without inversion). ``.degree`` is the measured exactness degree.
    """
    if degree < 1:
        raise ValueError("degree must be >= 1")
    order = _smallest_lebedev_order(degree)
    R, w = _lebedev_inplane(order, degree + 1)
    if inversion:
        R, w = _add_inversion(R, w)
    name = f"grid(degree={degree})"
    return O3Quadrature(R, w, _true_degree(R, w, order + 4), name, inversion)


# --------------------------------------------------------------------------------------
# Finite rotation groups
# --------------------------------------------------------------------------------------


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, dtype=np.float64)
    return Rotation.from_rotvec(angle * axis / np.linalg.norm(axis)).as_matrix()


def _closure(
    generators: list[np.ndarray], max_size: int = 1000, tol: float = 1e-8
) -> np.ndarray:
    """All products of ``generators`` (a finite group), deduplicated with ``tol``."""
    elements = [np.eye(3)]
    frontier = [np.eye(3)]
    while frontier:
        new = []
        for g in frontier:
            for h in generators:
                p = g @ h
                if not any(np.max(np.abs(p - e)) < tol for e in elements):
                    elements.append(p)
                    new.append(p)
        if len(elements) > max_size:
            raise RuntimeError("generators do not generate a small finite group")
        frontier = new
    out = np.array(elements)
    # re-orthonormalise (remove accumulated round-off) via the polar decomposition
    U, _, Vt = np.linalg.svd(out)
    return U @ Vt


_GROUP_GENERATORS = {
    # dihedral D2: three perpendicular 2-fold axes (exact to l=1)
    "D2": lambda: [_axis_angle([0, 0, 1], np.pi), _axis_angle([1, 0, 0], np.pi)],
    # chiral tetrahedral: 2-fold about z, 3-fold about (1,1,1) (exact to l=2)
    "T": lambda: [_axis_angle([0, 0, 1], np.pi), _axis_angle([1, 1, 1], 2 * np.pi / 3)],
    # chiral octahedral: 4-fold about z, 3-fold about (1,1,1)
    "O": lambda: [
        _axis_angle([0, 0, 1], np.pi / 2),
        _axis_angle([1, 1, 1], 2 * np.pi / 3),
    ],
    # chiral icosahedral: 5-fold about an icosahedron vertex (0,1,phi), 2-fold about z
    "I": lambda: [
        _axis_angle([0.0, 1.0, (1 + np.sqrt(5)) / 2], 2 * np.pi / 5),
        _axis_angle([0, 0, 1], np.pi),
    ],
}
_GROUP_ORDERS = {"D2": 4, "T": 12, "O": 24, "I": 60}


@functools.lru_cache(maxsize=None)
def group_quadrature(name: str, inversion: bool = True) -> O3Quadrature:
    """Finite rotation group with equal weights: "D2" (4 rotations, exact to l=1),
    "T" (12, exact to l=2), "O" (24, exact to l=3) or "I" (60, exact to l=5); with
    ``inversion`` the O(3) groups (twice as many ops, ``[R..., -R...]``). Elements
    are generated by closure; the degree is measured, not assumed."""
    if name not in _GROUP_GENERATORS:
        raise ValueError(
            f"unknown group {name!r}; available: {sorted(_GROUP_GENERATORS)}"
        )
    R = _closure(_GROUP_GENERATORS[name]())
    if R.shape[0] != _GROUP_ORDERS[name]:
        raise RuntimeError(f"closure of {name} gave {R.shape[0]} elements")
    w = np.full(R.shape[0], 1.0 / R.shape[0])
    if inversion:
        R, w = _add_inversion(R, w)
    label = name + ("h" if inversion else "") if name in ("O", "I") else name + ("+i" if inversion else "")
    return O3Quadrature(R, w, _true_degree(R, w), label, inversion)


# --------------------------------------------------------------------------------------
# Random sets and selection
# --------------------------------------------------------------------------------------


def haar_random(n: int, seed: int | None, improper: bool = True) -> O3Quadrature:
    """``n`` Haar-random operations from :func:`ase_symdiag.o3.operations.haar_rotations`
    (every odd index improper when ``improper``), equal weights, degree -1."""
    from ase_symdiag.o3.operations import haar_rotations

    if n < 1:
        raise ValueError("n must be >= 1")
    R = haar_rotations(n, seed, improper=improper)
    w = np.full(n, 1.0 / n)
    label = f"haar_random(n={n}, seed={seed})"
    return O3Quadrature(R, w, -1, label, improper and n > 1)


@functools.lru_cache(maxsize=None)
def smallest_exact_quadrature(degree: int, inversion: bool = True) -> O3Quadrature:
    """Fewest-operation rule exact to ``degree`` among group O, group I, the
    metatomic-ase Lebedev family and the metatomic.torch.o3 grid family (exactness
    measured numerically; ties go to the earlier family in that list). ``degree=0``
    gives the identity (and inversion)."""
    if degree < 0:
        raise ValueError("degree must be >= 0")
    if degree == 0:
        R, w = np.eye(3)[None], np.ones(1)
        if inversion:
            R, w = _add_inversion(R, w)
        return O3Quadrature(R, w, 0, "trivial", inversion)
    candidates = [group_quadrature(g, inversion) for g in ("D2", "T", "O", "I")]
    for m in range(1, min(degree, _LEBEDEV_ORDERS[-1]) + 1):
        candidates.append(lebedev_quadrature(m, inversion))
        candidates.append(grid_quadrature(m, inversion))
    exact = [q for q in candidates if q.degree >= degree]
    if not exact:
        raise ValueError(f"no available quadrature is exact to degree {degree}")
    return min(exact, key=lambda q: q.size)  # min is stable: first of equal sizes
