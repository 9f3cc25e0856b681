"""Metatensor samples and maps shared by the TorchScript modules of ase-symdiag.

Used inside ``forward`` of the exported models (reference_models, pet, export), so
every function here must stay TorchScript-compatible (no ``from __future__`` import).
"""

from typing import List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import System


def atom_samples(systems: List[System], device: torch.device) -> Labels:
    """``(system, atom)`` samples of every atom of ``systems``, system-major."""
    parts: List[torch.Tensor] = []
    for i, system in enumerate(systems):
        atoms = torch.arange(len(system), device=device)
        parts.append(torch.stack([torch.full_like(atoms, i), atoms], dim=1))
    return Labels(["system", "atom"], torch.cat(parts))


def selection_mask(samples: Labels, selected_atoms: Optional[Labels]) -> torch.Tensor:
    """Boolean mask over ``samples`` (system, atom) of the rows in ``selected_atoms``."""
    values = samples.values
    if selected_atoms is None:
        return torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    selected = selected_atoms.values.to(values.device)
    n_atoms_max = int(values[:, 1].max().item()) + 1 if values.shape[0] > 0 else 1
    key_all = values[:, 0].to(torch.long) * n_atoms_max + values[:, 1].to(torch.long)
    key_selected = selected[:, 0].to(torch.long) * n_atoms_max + selected[:, 1].to(torch.long)
    return torch.isin(key_all, key_selected)


def single_block_map(block: TensorBlock, device: torch.device) -> TensorMap:
    """A TensorMap with one block under the placeholder key ``_``."""
    return TensorMap(Labels("_", torch.tensor([[0]], device=device)), [block])


def force_map(systems: List[System], forces: torch.Tensor, selected_atoms: Optional[Labels], name: str) -> TensorMap:
    """Per-atom vectors ``forces`` ((sum of atoms, 3), system-major) as the ``name`` output
    (e.g. ``non_conservative_force``), restricted to ``selected_atoms``."""
    device = forces.device
    samples = atom_samples(systems, device)
    keep = selection_mask(samples, selected_atoms)
    block = TensorBlock(
        values=forces[keep].reshape(-1, 3, 1),
        samples=Labels(["system", "atom"], samples.values[keep]),
        components=[Labels(["xyz"], torch.arange(3, device=device).reshape(-1, 1))],
        properties=Labels([name], torch.tensor([[0]], device=device)),
    )
    return single_block_map(block, device)


def stress_map(stresses: torch.Tensor, name: str) -> TensorMap:
    """Per-system 3x3 tensors ``stresses`` ((systems, 3, 3)) as the ``name`` output
    (e.g. ``non_conservative_stress``)."""
    device = stresses.device
    block = TensorBlock(
        values=stresses.reshape(-1, 3, 3, 1),
        samples=Labels(["system"], torch.arange(stresses.shape[0], device=device).reshape(-1, 1)),
        components=[
            Labels(["xyz_1"], torch.arange(3, device=device).reshape(-1, 1)),
            Labels(["xyz_2"], torch.arange(3, device=device).reshape(-1, 1)),
        ],
        properties=Labels([name], torch.tensor([[0]], device=device)),
    )
    return single_block_map(block, device)
