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
from typing import Optional, Union

import numpy as np

from ase_symdiag.errors import UsageError
from ase_symdiag.o3.irreps import LEBEDEV_ORDERS as _LEBEDEV_ORDERS
from ase_symdiag.o3.irreps import averages_to_zero, wigner_D

__all__ = [
    "O3Quadrature",
    "lebedev_quadrature",
    "grid_quadrature",
    "group_quadrature",
    "haar_random",
    "wigner_D",
    "exactness_degree",
    "smallest_exact_quadrature",
    "quadrature_from_name",
    "identity_quadrature",
]


_ATOL = 1e-10
_MAX_DEGREE_SCAN = 40


@dataclass(frozen=True)
class O3Quadrature:
    """A weighted set of O(3) operations (see the module docstring for conventions).

    ``degree`` is the largest L such that the rule integrates every irrep
    ``(l, sigma)`` with ``1 <= l <= L`` to zero (-1 when not exact, e.g. random sets).
    ``include_inversion`` is True when the set contains the inversion coset (-R for each R).
    The arrays are stored as read-only float64 copies.
    """

    rotations: np.ndarray
    weights: np.ndarray
    degree: int
    name: str
    include_inversion: bool

    def __post_init__(self) -> None:
        rotations = np.array(self.rotations, dtype=np.float64, copy=True)
        weights = np.array(self.weights, dtype=np.float64, copy=True)
        if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
            raise UsageError(
                f"rotations must have shape (K, 3, 3), got {rotations.shape}"
            )
        if weights.shape != (rotations.shape[0],):
            raise UsageError(
                f"weights must have shape ({rotations.shape[0]},), got {weights.shape}"
            )
        if rotations.shape[0] == 0:
            raise UsageError("a quadrature needs at least one operation")
        rotations.flags.writeable = False
        weights.flags.writeable = False
        object.__setattr__(self, "rotations", rotations)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "degree", int(self.degree))
        object.__setattr__(self, "include_inversion", bool(self.include_inversion))

    @property
    def size(self) -> int:
        """Number of operations K."""
        return int(self.rotations.shape[0])


# --------------------------------------------------------------------------------------
# Exactness
# --------------------------------------------------------------------------------------


def _degree(rotations: np.ndarray, weights: np.ndarray, lmax: int, atol: float) -> int:
    improper = bool(np.any(np.linalg.det(rotations) < 0))
    if improper and not averages_to_zero(0, -1, rotations, weights, atol):
        return -1  # the pseudoscalar (0,-) is not integrated to zero
    for l in range(1, lmax + 1):
        if not all(averages_to_zero(l, sigma, rotations, weights, atol) for sigma in (1, -1)):
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
        raise UsageError(
            f"degree {l} exceeds the largest Lebedev order {_LEBEDEV_ORDERS[-1]}"
        )
    return min(o for o in _LEBEDEV_ORDERS if o >= l)


@functools.lru_cache(maxsize=None)
def lebedev_quadrature(degree: int, include_inversion: bool = True) -> O3Quadrature:
    """metatomic-ase 0.1.4 ``SymmetrizedCalculator(l_max=degree)`` operation set.

    Lebedev order = smallest available >= degree, K = 2*degree + 1 in-plane angles,
    times {identity, inversion} (ops ``[R..., -R...]``, weights halved). ``degree``
    here is metatomic-ase's ``l_max``; the returned ``.degree`` is the *measured*
    exactness degree, which can differ (it is min(lebedev order, 2*l_max) in practice,
    e.g. 2 for l_max=1 and 3 for l_max=2).
    """
    if degree < 1:
        raise UsageError("degree (l_max) must be >= 1")
    order = _smallest_lebedev_order(degree)
    R, w = _lebedev_inplane(order, 2 * degree + 1)
    if include_inversion:
        R, w = _add_inversion(R, w)
    name = f"lebedev:{degree}" + ("" if include_inversion else ":proper")
    return O3Quadrature(R, w, _true_degree(R, w, order + 4), name, include_inversion)


@functools.lru_cache(maxsize=None)
def grid_quadrature(degree: int, include_inversion: bool = True) -> O3Quadrature:
    """metatomic.torch.o3 (``choose_quadrature`` / ``get_rotation_quadrature``) grid.

    Lebedev order = smallest available >= degree, K = degree + 1 in-plane angles;
    with ``include_inversion`` the set is extended to O(3) as ``[R..., -R...]`` with halved
    weights (``SymmetrizedModel`` does the same by evaluating each rotation with and
    without inversion). ``.degree`` is the measured exactness degree.
    """
    if degree < 1:
        raise UsageError("degree must be >= 1")
    order = _smallest_lebedev_order(degree)
    R, w = _lebedev_inplane(order, degree + 1)
    if include_inversion:
        R, w = _add_inversion(R, w)
    name = f"grid:{degree}" + ("" if include_inversion else ":proper")
    return O3Quadrature(R, w, _true_degree(R, w, order + 4), name, include_inversion)


# --------------------------------------------------------------------------------------
# Finite rotation groups
# --------------------------------------------------------------------------------------


#: scipy's names of the chiral point groups used here, and their orders
_GROUP_ORDERS = {"D2": 4, "T": 12, "O": 24, "I": 60}


@functools.lru_cache(maxsize=None)
def group_quadrature(name: str, include_inversion: bool = True) -> O3Quadrature:
    """Finite rotation group with equal weights: "D2" (4 rotations, exact to l=1),
    "T" (12, exact to l=2), "O" (24, exact to l=3) or "I" (60, exact to l=5); with
    ``include_inversion`` the O(3) groups (twice as many ops, ``[R..., -R...]``). Elements
    are scipy's (``Rotation.create_group``: 2-fold axes along x, y, z for D2, T and
    O); the degree is measured, not assumed."""
    from scipy.spatial.transform import Rotation

    if name not in _GROUP_ORDERS:
        raise UsageError(f"unknown group {name!r}; available: {sorted(_GROUP_ORDERS)}")
    R = Rotation.create_group(name).as_matrix()
    w = np.full(R.shape[0], 1.0 / R.shape[0])
    if include_inversion:
        R, w = _add_inversion(R, w)
    label = name + "h" if include_inversion else name + ":proper"
    return O3Quadrature(R, w, _true_degree(R, w), label, include_inversion)


# --------------------------------------------------------------------------------------
# Random sets and selection
# --------------------------------------------------------------------------------------


def haar_random(n: int, seed: int | None, include_inversion: bool = True) -> O3Quadrature:
    """``n`` Haar-random operations from :func:`ase_symdiag.o3.operations.haar_rotations`
    (every odd index improper when ``include_inversion``), equal weights, degree -1."""
    from ase_symdiag.o3.operations import haar_rotations

    if n < 1:
        raise UsageError("n must be >= 1")
    R = haar_rotations(n, seed, include_inversion=include_inversion)
    w = np.full(n, 1.0 / n)
    label = f"haar_random(n={n}, seed={seed})"
    return O3Quadrature(R, w, -1, label, include_inversion and n > 1)


@functools.lru_cache(maxsize=None)
def smallest_exact_quadrature(degree: int, include_inversion: bool = True) -> O3Quadrature:
    """Fewest-operation rule exact to ``degree`` among group O, group I, the
    metatomic-ase Lebedev family and the metatomic.torch.o3 grid family (exactness
    measured numerically; ties go to the earlier family in that list). ``degree=0``
    gives the identity (and inversion)."""
    if degree < 0:
        raise UsageError("degree must be >= 0")
    if degree > MAX_DEGREE:
        raise UsageError(f"degree {degree} is beyond what can be computed in reasonable time (at most {MAX_DEGREE})")
    if degree == 0:
        R, w = np.eye(3)[None], np.ones(1)
        if include_inversion:
            R, w = _add_inversion(R, w)
        return O3Quadrature(R, w, 0, "Ci" if include_inversion else "C1", include_inversion)
    candidates = [group_quadrature(g, include_inversion) for g in ("D2", "T", "O", "I")]
    for m in range(1, min(degree, _LEBEDEV_ORDERS[-1]) + 1):
        candidates.append(lebedev_quadrature(m, include_inversion))
        candidates.append(grid_quadrature(m, include_inversion))
    exact = [q for q in candidates if q.degree >= degree]
    if not exact:
        raise UsageError(f"no available quadrature is exact to degree {degree}")
    return min(exact, key=lambda q: q.size)  # min is stable: first of equal sizes


# --------------------------------------------------------------------------------------
# Names: what is printed is what is accepted
# --------------------------------------------------------------------------------------

#: largest degree :func:`quadrature_from_name` builds (degree 10 takes ~2 min to build and
#: verify, 1,100 operations; beyond it the cost grows steeply)
MAX_DEGREE = 10

_ALIASES = {"trivial": "Ci", "none": "C1", "identity": "C1", "D2+i": "D2h", "T+i": "Th",
            "D2": "D2h", "T": "Th", "O": "Oh", "I": "Ih"}


def identity_quadrature() -> O3Quadrature:
    """``C1``: the identity alone (no averaging)."""
    return O3Quadrature(np.eye(3)[None], np.ones(1), -1, "C1", False)


def _degree_value(text: str, name: str) -> int:
    if not text.isdigit():
        raise UsageError(f"quadrature {name!r}: the degree must be a whole number >= 0")
    degree = int(text)
    if degree > MAX_DEGREE:
        raise UsageError(f"quadrature {name!r}: degree {degree} is beyond what can be computed in reasonable time (at most {MAX_DEGREE})")
    return degree


def quadrature_from_name(name: str) -> O3Quadrature:
    """The quadrature whose printed name is ``name`` (every ``O3Quadrature.name`` that
    a builder of this module prints is accepted back).

    * ``"C1"`` the identity; ``"Ci"`` identity and inversion;
    * ``"D2h"``, ``"Th"``, ``"Oh"``, ``"Ih"``: the finite group with the inversion
      (8, 24, 48, 120 operations; exact to degree 1, 2, 3, 5); ``"D2:proper"``,
      ``"T:proper"``, ...: its proper rotations only; ``"D2"``, ``"T"``, ``"O"``, ``"I"``
      are shorthands of the groups *with* inversion (as ``symmetrize="O"`` always was);
    * ``"lebedev:L"`` (metatomic-ase's set at ``l_max=L``), ``"grid:L"``
      (metatomic.torch.o3's grid), with ``":proper"`` for proper rotations only;
    * ``"L"`` (digits): the smallest rule exact to degree L, with inversion.

    ``"T+"`` (once the proper rotations, silently) is refused with the two names
    that say what is meant.
    """
    text = str(name).strip()
    text = _ALIASES.get(text, text)
    if text == "C1":
        return identity_quadrature()
    if text == "Ci":
        return smallest_exact_quadrature(0)
    if text.isdigit():
        return smallest_exact_quadrature(_degree_value(text, name))
    groups = {"D2h": "D2", "Th": "T", "Oh": "O", "Ih": "I"}
    if text in groups:
        return group_quadrature(groups[text], include_inversion=True)
    if text.endswith(":proper") and text[: -len(":proper")] in _GROUP_ORDERS:
        return group_quadrature(text[: -len(":proper")], include_inversion=False)
    if text.endswith("+") and text[:-1] in _GROUP_ORDERS:
        group = text[:-1]
        raise UsageError(
            f"quadrature {name!r} is ambiguous: use '{group}:proper' for the proper rotations of {group} "
            f"or '{group}h' for {group} with the inversion"
        )
    family, _, rest = text.partition(":")
    if family in ("lebedev", "grid") and rest:
        degree_text, _, proper = rest.partition(":")
        if proper not in ("", "proper"):
            raise UsageError(f"unknown quadrature {name!r}: did you mean '{family}:{degree_text}:proper'?")
        degree = _degree_value(degree_text, name)
        build = lebedev_quadrature if family == "lebedev" else grid_quadrature
        return build(degree, include_inversion=not proper)
    raise UsageError(
        f"unknown quadrature {name!r}: use a degree (3), 'Ci', 'D2h', 'Th', 'Oh', 'Ih' (or 'O' for 'Oh'), "
        "'O:proper' for proper rotations only, 'lebedev:3' or 'grid:3'"
    )


def resolve_quadrature(spec) -> Optional[O3Quadrature]:
    """Turn a user's ``symmetrize=`` value into a quadrature.

    ``None``/``False``: no averaging. An int L: the smallest quadrature exact to degree
    L (with inversion). A string: a printed quadrature name, see
    :func:`quadrature_from_name` (``"Oh"``, ``"O"``,
    ``"O:proper"``, ``"lebedev:3"``, ``"grid:3"``, ``"3"``). An :class:`O3Quadrature`
    is used as is.
    """
    if spec is None or spec is False:
        return None
    if isinstance(spec, O3Quadrature):
        return spec
    if isinstance(spec, bool):
        raise UsageError("symmetrize=True is ambiguous: give a degree, e.g. symmetrize=3")
    if isinstance(spec, (int, np.integer)):
        if spec < 0:
            raise UsageError(f"symmetrize={int(spec)}: the degree must be >= 0")
        return quadrature_from_name(str(int(spec)))
    if isinstance(spec, str):
        return quadrature_from_name(spec)
    raise UsageError(f"symmetrize={spec!r}: give a degree, a quadrature name (e.g. 'Oh', 'lebedev:3') or an O3Quadrature")


def parse_quadrature(text: str) -> Union[int, str]:
    """A user's quadrature text (``"3"``, ``"O"``, ``"lebedev:3"``), checked with
    :func:`resolve_quadrature`: digits as an int degree, anything else as the name.
    Raises :class:`~ase_symdiag.errors.UsageError` naming the problem."""
    spec: Union[int, str] = int(text) if text.strip().isdigit() else text
    resolve_quadrature(spec)
    return spec
