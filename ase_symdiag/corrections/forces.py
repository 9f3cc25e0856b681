"""Force constraints: zero net force and zero net torque, and their diagnostics."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ase_symdiag.corrections.base import Correction, Outputs, check_weighting, copy_outputs, atom_weights
from ase_symdiag.structures import Structure

__all__ = ["NetForce", "NetTorque", "net_force", "net_torque"]


def net_force(forces: np.ndarray) -> np.ndarray:
    """``sum_i F_i`` (3,), eV/Å, of forces ``(N, 3)`` eV/Å."""
    return np.asarray(forces, dtype=np.float64).sum(axis=0)


def net_torque(forces: np.ndarray, positions: np.ndarray, centre: Optional[np.ndarray] = None) -> np.ndarray:
    """``sum_i (r_i - c) x F_i`` (3,), eV; ``c`` (3,) Å defaults to the centroid.

    The torque is independent of ``c`` only when the net force is zero.
    """
    positions = np.asarray(positions, dtype=np.float64)
    c = positions.mean(axis=0) if centre is None else np.asarray(centre, dtype=np.float64)
    return np.cross(positions - c, np.asarray(forces, dtype=np.float64)).sum(axis=0)


def _symmetric_solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Minimum-norm ``x`` with ``matrix x = rhs`` for a symmetric positive semi-definite
    ``(3, 3)`` ``matrix``: the solver of :func:`ase_symdiag.backends.rigid.symmetric_solve`
    (eigendecomposition; eigenvalues below ``1e-12`` of the largest are zero)."""
    values, vectors = np.linalg.eigh(matrix)
    keep = np.abs(values) > np.abs(values).max() * 1e-12
    inverse = np.where(keep, 1.0 / np.where(keep, values, 1.0), 0.0)
    return vectors @ (inverse * (vectors.T @ rhs))


class NetForce(Correction):
    """Zero net force: ``F_i <- F_i - a_i sum_j F_j`` (translational invariance).

    Makes exact: ``sum_i F_i = 0`` (to round-off), for every structure, periodic or
    not, so MD conserves the total momentum. ``weighting="uniform"`` (default) takes
    ``a_i = 1/N`` (subtract the mean force: the smallest change in the Euclidean norm);
    ``weighting="mass"`` takes ``a_i = m_i / M`` (remove the centre-of-mass
    acceleration: the smallest change of the accelerations in the kinetic metric).
    Energy, stress and per-atom energies are untouched.
    """

    name = "net_force"

    def __init__(self, weighting: str = "uniform") -> None:
        self.weighting = check_weighting(weighting, "NetForce")

    def __call__(self, outputs: Outputs, structure: Structure, masses: Optional[np.ndarray] = None) -> Outputs:
        out = copy_outputs(outputs)
        forces = out.get("forces")
        if forces is None:
            return out
        a = atom_weights(self.weighting, masses, len(forces), "NetForce")
        out["forces"] = forces - np.outer(a / a.sum(), forces.sum(axis=0))
        return out

    def __repr__(self) -> str:
        return f"NetForce(weighting={self.weighting!r})"


class NetTorque(Correction):
    """Zero net torque for finite structures: ``F_i <- F_i - a_i w x r_i'``.

    With weights ``a_i`` (1, or the masses for ``weighting="mass"``), the centre
    ``c = sum a_i r_i / sum a_i`` (centroid, or centre of mass), ``r_i' = r_i - c``,
    ``tau = sum r_i' x F_i`` and ``I = sum a_i (|r_i'|^2 1 - r_i' r_i'^T)``, it solves
    ``I w = tau`` (pseudo-inverse, minimum norm, for linear molecules and single atoms,
    where the torque along the axis vanishes anyway) and subtracts the rigid-rotation
    field (the definition of :mod:`ase_symdiag.backends.rigid`, its torch form for the
    torch backends, MD wrappers and exports; tested against this one). Since ``sum a_i r_i' x (w x r_i') = I w``, the corrected torque is exactly
    zero, and since ``sum a_i w x r_i' = w x sum a_i r_i' = 0`` the correction adds no
    net force.

    Makes exact: ``sum_i (r_i - c) x F_i = 0``; together with :class:`NetForce` (zero
    net force, so the torque is the same about every point) the total angular
    momentum is conserved in MD (velocity Verlet conserves it exactly for such forces).
    Energy, stress and per-atom energies are untouched.

    Periodic structures (any periodic direction): no-op. Angular momentum is not a
    conserved quantity under periodic boundary conditions, and the rigid-rotation
    field ``w x r'`` is not periodic.

    Order: apply after :class:`NetForce`. The torque of a net force ``f`` spread as
    ``b_i f`` about ``c`` is ``(sum b_i r_i') x f``: it vanishes when both corrections
    use the same weights (both uniform: the centroid; both mass: the centre of mass),
    and then the two commute. With mismatched weights (e.g. uniform NetForce, mass
    NetTorque) NetForce applied *after* NetTorque puts a torque back, while NetTorque
    applied last never re-creates a net force: ``[NetForce(), NetTorque()]`` is exact
    for every choice.
    """

    name = "net_torque"

    def __init__(self, weighting: str = "uniform") -> None:
        self.weighting = check_weighting(weighting, "NetTorque")

    def __call__(self, outputs: Outputs, structure: Structure, masses: Optional[np.ndarray] = None) -> Outputs:
        out = copy_outputs(outputs)
        forces = out.get("forces")
        if forces is None or bool(np.any(structure.pbc)):
            return out
        a = atom_weights(self.weighting, masses, len(forces), "NetTorque")
        positions = np.asarray(structure.positions, dtype=np.float64)
        centre = (a[:, None] * positions).sum(axis=0) / a.sum()
        r = positions - centre
        tau = np.cross(r, forces).sum(axis=0)
        inertia = (a * np.einsum("ij,ij->i", r, r)).sum() * np.eye(3) - np.einsum("i,ij,ik->jk", a, r, r)
        w = _symmetric_solve(inertia, tau)
        out["forces"] = forces - a[:, None] * np.cross(w, r)
        return out

    def __repr__(self) -> str:
        return f"NetTorque(weighting={self.weighting!r})"
