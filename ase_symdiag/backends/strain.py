"""The strain and virial path in torch: the one implementation of the metatomic
evaluation, the symmetrized export and the corrected export.

Convention (positions are rows, as everywhere in ase-symdiag): a strain ``eps``
``(3, 3)`` (or a batch ``(B, 3, 3)``, the identity at the point of evaluation) acts as
``x' = x eps`` and ``cell' = cell eps``; pair vectors follow as
``d_ij = x'_j - x'_i + S_ij cell'`` (``S``: integer cell shifts). The stress is
``sigma = (1/V) dE/d(eps)`` at ``eps = 1``, eV/Å^3 for E in eV and V in Å^3 (ASE's
sign: positive under tension). Every function is TorchScript-compatible.
"""

from typing import List, Tuple

import torch

__all__ = ["identity_strain", "apply_strain", "pair_vectors", "strain_gradient", "stress_from_strain_gradient"]


def identity_strain(n_copies: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A leaf ``(n_copies, 3, 3)`` identity strain that requires grad (one per copy)."""
    return torch.eye(3, dtype=dtype, device=device).repeat(n_copies, 1, 1).requires_grad_(True)


def apply_strain(positions: torch.Tensor, cell: torch.Tensor, strain: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x eps, cell eps)`` for positions ``(..., N, 3)``, cell and strain ``(..., 3, 3)``."""
    return positions @ strain, cell @ strain


def pair_vectors(
    positions: torch.Tensor, first: torch.Tensor, second: torch.Tensor, shifts: torch.Tensor, cell: torch.Tensor
) -> torch.Tensor:
    """``d = x_second - x_first + S cell``, ``(..., P, 3)``, for positions ``(..., N, 3)``,
    pair indices ``(P,)``, integer shifts ``(P, 3)`` (in the positions' dtype) and
    cell ``(..., 3, 3)`` (rows are the cell vectors)."""
    return positions.index_select(-2, second) - positions.index_select(-2, first) + shifts @ cell


def strain_gradient(tensors: List[torch.Tensor], gradients: List[torch.Tensor]) -> torch.Tensor:
    """``dE/d(eps)`` ``(3, 3)`` at ``eps = 1`` from the gradients of E with respect to
    every quantity that strains as ``t -> t eps`` (positions, cell, pair vectors; any
    leading shape, 3 components last): ``sum_t t^T dE/dt``, the virial identity."""
    total = torch.zeros((3, 3), dtype=tensors[0].dtype, device=tensors[0].device)
    for i in range(len(tensors)):
        total = total + tensors[i].reshape(-1, 3).T @ gradients[i].reshape(-1, 3)
    return total


def stress_from_strain_gradient(gradient: torch.Tensor, volume: torch.Tensor, symmetrize: bool) -> torch.Tensor:
    """The stress ``(1/V) dE/d(eps)``, ``(..., 3, 3)`` eV/Å^3 (ASE sign), of a strain
    gradient ``(..., 3, 3)`` and volume ``V`` (Å^3; a scalar or ``(...)`` tensor).
    ``symmetrize``: its symmetric part (a rotation-invariant energy's is symmetric
    already; a diagnostic keeps the antisymmetric part, the breaking)."""
    if volume.dim() > 0:
        volume = volume.unsqueeze(-1).unsqueeze(-1)
    stress = gradient / volume
    if symmetrize:
        stress = 0.5 * (stress + stress.transpose(-2, -1))
    return stress
