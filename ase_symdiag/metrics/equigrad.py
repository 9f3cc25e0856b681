"""Equigrad: the derivative of the energy under an infinitesimal rotation (docs/methods.md §8).

For a structure x (positions and, if periodic, cell rows v_k) and a unit axis n,

    e_n = dE(R_n(θ) x)/dθ |_{θ=0},      R_n(θ) = exp(θ [n]_x)  (column convention, x' = R x)

and ``e = (e_x, e_y, e_z)`` (eV/rad) is what Orb's equigrad loss penalises. With
g_k = ∂E/∂v_k (every row vector the energy sees: positions, and cell rows at fixed
Cartesian positions) and the unsymmetrised virial ``M_ab = Σ_k v_ka g_kb``,

    e_c = Σ_k (v_k × g_k)_c = ε_cab M_ab,

the antisymmetric part of M, which a (symmetric) stress output never shows. An
exactly invariant energy has e = 0. For a non-periodic structure with conservative
forces F = -∂E/∂x, ``e = -Σ_i x_i × F_i`` (minus the net torque).

Orb's ``rotational_grad`` is ``G = ∂E/∂G`` for ``x -> x exp(G - G^T)`` (row vectors),
i.e. ``G = M - M^T``, so ``e = (G_12, G_20, G_01)`` (:func:`from_rotational_grad`).

How it is computed: by autograd where the model allows it (Orb models:
:meth:`~ase_symdiag.backends.orb.OrbModel.rotational_grad`), otherwise by central
finite differences of six rotated evaluations, ``e_n ≈ (E(R_n(h)x) - E(R_n(-h)x)) / 2h``
(error O(h^2) plus round-off over h), through any backend
(:mod:`ase_symdiag.drivers.equigrad`). This module imports no ASE and no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np

#: rad: default finite-difference steps (truncation ~h^2 E''', round-off ~eps |E| / h)
STEP = {"float64": 1e-3, "float32": 2e-2}

#: what the reported quantity is (written next to it in JSON reports)
DEFINITION = (
    "dE/dtheta at theta = 0 for the structure (positions and cell) rotated by theta about x, y and z "
    "(eV/rad); 0 for an exactly rotation-invariant energy; equals (G_12, G_20, G_01) of orb's rotational_grad G"
)


def axis_rotations(step: float) -> np.ndarray:
    """(6, 3, 3): rotations by +step and -step (rad) about x, y, z, in that order
    (``R_x(+h), R_x(-h), R_y(+h), ...``), column convention ``x' = R x``."""
    rotations = []
    for axis in np.eye(3):
        k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
        for angle in (step, -step):  # Rodrigues: exp(angle K) for a unit axis
            rotations.append(np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k))
    return np.array(rotations)


def central_difference(energies: np.ndarray, step: float) -> np.ndarray:
    """(3,) eV/rad from the energies (6,) eV at :func:`axis_rotations` ``(step)``."""
    energies = np.asarray(energies, dtype=np.float64).reshape(3, 2)
    return (energies[:, 0] - energies[:, 1]) / (2.0 * step)


def from_rotational_grad(gradient: np.ndarray) -> np.ndarray:
    """(..., 3) e from orb's ``rotational_grad`` (..., 3, 3): ``(G_12, G_20, G_01)``."""
    gradient = np.asarray(gradient, dtype=np.float64)
    return np.stack([gradient[..., 1, 2], gradient[..., 2, 0], gradient[..., 0, 1]], axis=-1)


def from_forces(positions: np.ndarray, forces: np.ndarray) -> np.ndarray:
    """(3,) ``-Σ_i x_i × F_i`` (eV/rad): e of a NON-periodic structure when ``forces``
    (N, 3) are the energy's negative gradient at ``positions`` (N, 3), Å."""
    return -np.cross(np.asarray(positions, dtype=np.float64), np.asarray(forces, dtype=np.float64)).sum(axis=0)


@dataclass
class StructureEquigrad:
    """e of one structure: ``vector`` (3,) eV/rad, ``norm`` |e| eV/rad, and how it was computed."""

    label: str
    n_atoms: int
    vector: List[float]
    norm: float
    method: str  # "autograd" or "finite-difference"
    step: Optional[float] = None  # rad, finite differences only

    def to_dict(self) -> dict:
        return asdict(self)


def report_dict(results: List[StructureEquigrad]) -> dict:
    """The JSON block of a report: definition, worst |e|, per structure."""
    norms = [r.norm for r in results]
    worst = float("nan") if any(np.isnan(norms)) else (max(norms) if norms else None)
    return {"definition": DEFINITION, "max_eV_per_rad": worst, "structures": [r.to_dict() for r in results]}


__all__ = [
    "DEFINITION",
    "STEP",
    "StructureEquigrad",
    "axis_rotations",
    "central_difference",
    "from_forces",
    "from_rotational_grad",
    "report_dict",
]
