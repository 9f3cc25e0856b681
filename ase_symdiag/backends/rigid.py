"""Net force and net torque removal in torch: the one implementation of the torch
backends, the MD wrappers and the TorchScript exports.

Every function is TorchScript-compatible (``torch.jit.script`` compiles it) and
batched over systems: atoms ``i`` (rows of ``(N, 3)`` tensors) belong to system
``system_idx[i]`` in ``0 .. n_systems - 1``; one system is ``system_idx = 0``.

The definition (docs/methods.md §6), shared with the numpy corrections
:class:`ase_symdiag.corrections.NetForce` and :class:`ase_symdiag.corrections.NetTorque`
(tested against each other), with per-atom weights ``a_i`` (ones, or the masses):

- net force: ``F_i <- F_i - a_i / (sum_j a_j) sum_j F_j`` (per system);
- net torque: centre ``c = sum a_i r_i / sum a_i``, ``r_i' = r_i - c``,
  ``tau = sum r_i' x F_i``, inertia ``I = sum a_i (|r_i'|^2 1 - r_i' r_i'^T)``,
  ``w = I^+ tau`` (:func:`symmetric_solve`: eigendecomposition, pseudo-inverse for
  linear molecules and single atoms), ``F_i <- F_i - a_i w x r_i'``.
"""

from typing import List

import torch

__all__ = ["per_system_sum", "symmetric_solve", "remove_net_force", "remove_net_torque"]

def per_system_sum(values: torch.Tensor, system_idx: torch.Tensor, n_systems: int) -> torch.Tensor:
    """``(n_systems, ...)``: the sum of ``values`` ``(N, ...)`` over each system's atoms."""
    shape: List[int] = [n_systems]
    for size in values.shape[1:]:
        shape.append(size)
    return torch.zeros(shape, dtype=values.dtype, device=values.device).index_add(0, system_idx, values)


def symmetric_solve(matrix: torch.Tensor, rhs: torch.Tensor, rtol: float = 1e-12) -> torch.Tensor:
    """Minimum-norm solution of ``matrix x = rhs`` for symmetric positive semi-definite
    3x3 matrices (inertia tensors): ``matrix`` ``(3, 3)`` or ``(S, 3, 3)``, ``rhs``
    ``(3,)`` or ``(S, 3)``, through the eigendecomposition.

    A linear molecule's inertia tensor is singular; ``torch.linalg.lstsq`` handles that
    on CPU (driver ``gelsy``) but not on CUDA, whose only driver (``gels``) assumes
    full rank. The eigendecomposition works on every device; eigenvalues below
    ``rtol`` of the largest (of each matrix) are treated as zero (the
    pseudo-inverse, as numpy's ``lstsq``).
    """
    values, vectors = torch.linalg.eigh(matrix)
    cutoff = values.abs().amax(dim=-1, keepdim=True) * rtol
    keep = values.abs() > cutoff
    safe = torch.where(keep, values, torch.ones_like(values))
    inverse = torch.where(keep, 1.0 / safe, torch.zeros_like(values))
    projected = (vectors.transpose(-2, -1) @ rhs.unsqueeze(-1)).squeeze(-1)
    return (vectors @ (inverse * projected).unsqueeze(-1)).squeeze(-1)


def remove_net_force(
    forces: torch.Tensor, weights: torch.Tensor, system_idx: torch.Tensor, n_systems: int
) -> torch.Tensor:
    """``forces`` ``(N, 3)`` with each system's net force removed, spread as
    ``a_i / sum_j a_j`` over its atoms (``weights`` ``a`` ``(N,)``: ones for the mean)."""
    share = weights / per_system_sum(weights, system_idx, n_systems)[system_idx]
    return forces - share.unsqueeze(1) * per_system_sum(forces, system_idx, n_systems)[system_idx]


def remove_net_torque(
    forces: torch.Tensor,
    positions: torch.Tensor,
    weights: torch.Tensor,
    system_idx: torch.Tensor,
    n_systems: int,
) -> torch.Tensor:
    """``forces`` ``(N, 3)`` with each system's net torque about its weighted centre
    removed by the rigid-rotation field ``a_i w x r_i'`` (module docstring); adds no
    net force. ``positions`` ``(N, 3)``, ``weights`` ``(N,)``. The caller decides
    whether it applies (finite systems only: the field is not periodic)."""
    a = weights.unsqueeze(1)
    centre = per_system_sum(a * positions, system_idx, n_systems) / per_system_sum(a, system_idx, n_systems)
    r = positions - centre[system_idx]
    torque = per_system_sum(torch.linalg.cross(r, forces), system_idx, n_systems)
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    inertia = per_system_sum(weights * (r * r).sum(dim=1), system_idx, n_systems).reshape(-1, 1, 1) * eye
    inertia = inertia - per_system_sum(a.unsqueeze(2) * r.unsqueeze(2) * r.unsqueeze(1), system_idx, n_systems)
    omega = symmetric_solve(inertia, torque)
    return forces - a * torch.linalg.cross(omega[system_idx], r)
