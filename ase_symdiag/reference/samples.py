"""Training samples of the reference PET: structures with precomputed graphs, splits, batches.

Neighbour lists are computed ONCE per structure: a rotation of positions and cell
does not change the graph, only rotates the edge vectors, so :func:`collate` can
rotate a structure (and its force and stress labels) without recomputing it.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ase_symdiag.reference.config import TrainingConfigError


class Sample:
    """One structure with its precomputed graph and labels (float64 torch tensors).

    Attributes: ``species`` (n_atoms,) model type indices, ``positions`` (n_atoms, 3) Å,
    ``cell`` (3, 3) Å, ``first``/``second``/``reverse`` (n_edges,) edge indices,
    ``shifts`` (n_edges, 3) cell shifts, ``energy`` eV, ``forces`` (n_atoms, 3) eV/Å or
    None, ``stress`` (3, 3) eV/Å^3 (fully periodic structures with a label) or None,
    ``volume`` Å^3 (0 for a non-periodic structure).
    """

    def __init__(self, atoms, species: np.ndarray, cutoff: float) -> None:
        from ase.neighborlist import neighbor_list

        from ase_symdiag.reference.pet import reverse_pair_index

        self.n_atoms = len(atoms)
        self.species = torch.tensor(species, dtype=torch.long)
        self.positions = torch.tensor(atoms.positions, dtype=torch.float64)
        self.cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
        self.periodic = bool(np.all(atoms.pbc))
        self.volume = float(abs(np.linalg.det(atoms.cell.array))) if self.periodic else 0.0
        i, j, shifts = neighbor_list("ijS", atoms, cutoff)
        self.first = torch.tensor(i, dtype=torch.long)
        self.second = torch.tensor(j, dtype=torch.long)
        self.shifts = torch.tensor(shifts, dtype=torch.float64)
        self.reverse = reverse_pair_index(
            self.first, self.second, torch.tensor(shifts, dtype=torch.long), self.n_atoms
        )
        self.energy = float(atoms.info["energy"])
        forces = atoms.arrays.get("forces")
        self.forces = None if forces is None else torch.tensor(forces, dtype=torch.float64)
        stress = atoms.info.get("stress")
        self.stress = (
            torch.tensor(np.asarray(stress).reshape(3, 3), dtype=torch.float64)
            if stress is not None and self.periodic
            else None
        )


def load_samples(
    path: str, atomic_types: Optional[List[int]], cutoff: float, max_structures: Optional[int] = None
) -> Tuple[list, List[Sample], List[int]]:
    """Read a data set and build :class:`Sample` objects (graphs within ``cutoff`` Å,
    computed once). Returns ``(images, samples, atomic_types)``; ``atomic_types``
    defaults to the sorted atomic numbers present."""
    from ase_symdiag.reference.data import read_dataset

    images = read_dataset(path)
    if max_structures is not None:
        images = images[: int(max_structures)]
    if len(images) == 0:
        raise TrainingConfigError(f"data set '{path}' is empty")
    if atomic_types is None:
        atomic_types = sorted({int(z) for atoms in images for z in atoms.numbers})
    index = {t: k for k, t in enumerate(atomic_types)}
    samples = []
    for k, atoms in enumerate(images):
        missing = sorted({int(z) for z in atoms.numbers} - set(index))
        if missing:
            raise TrainingConfigError(f"{path}: structure {k} has atomic types {missing} unknown to the model")
        species = np.array([index[int(z)] for z in atoms.numbers])
        samples.append(Sample(atoms, species, cutoff))
    return images, samples, atomic_types


def split_indices(n: int, split: Dict[str, float], seed: int) -> Tuple[List[int], List[int], List[int]]:
    """Seeded random train/validation/test split of ``range(n)``."""
    total = sum(float(v) for v in split.values())
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * float(split["validation"]) / total))
    n_test = int(round(n * float(split["test"]) / total))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise TrainingConfigError(f"split {split} leaves no training structures out of {n}")
    return order[:n_train].tolist(), order[n_train : n_train + n_val].tolist(), order[n_train + n_val :].tolist()


def collate(
    samples: Sequence[Sample], rotations: Optional[Sequence[Optional[np.ndarray]]], dtype: torch.dtype
) -> dict:
    """Concatenate structures (each optionally rotated by a (3, 3) O(3) matrix ``R``:
    ``x R^T``, ``cell R^T``, ``F R^T``, ``R S R^T``) into one batch of tensors.

    Keys: per atom ``positions`` (n, 3), ``species``, ``atom_system``, ``forces`` (n, 3,
    NaN where unlabelled); per edge ``first``, ``second``, ``reverse``, ``shifts``,
    ``edge_system``; per structure ``cells`` (B, 3, 3), ``stress`` (B, 3, 3),
    ``stress_mask``, ``volumes`` (1 where non-periodic), ``energy``, ``n_atoms``;
    and ``n_systems`` (int).
    """
    positions, cells, species, first, second, reverse, shifts = [], [], [], [], [], [], []
    atom_system, edge_system, forces, stresses = [], [], [], []
    energies, n_atoms, stress_mask, volumes = [], [], [], []
    atom_offset = 0
    edge_offset = 0
    for b, sample in enumerate(samples):
        pos, cell = sample.positions, sample.cell
        f, s = sample.forces, sample.stress
        rotation = None if rotations is None else rotations[b]
        if rotation is not None:
            r = torch.tensor(rotation, dtype=torch.float64)
            pos = pos @ r.T
            cell = cell @ r.T
            f = None if f is None else f @ r.T
            s = None if s is None else r @ s @ r.T
        positions.append(pos)
        cells.append(cell)
        species.append(sample.species)
        first.append(sample.first + atom_offset)
        second.append(sample.second + atom_offset)
        reverse.append(sample.reverse + edge_offset)
        shifts.append(sample.shifts)
        atom_system.append(torch.full((sample.n_atoms,), b, dtype=torch.long))
        edge_system.append(torch.full((len(sample.first),), b, dtype=torch.long))
        forces.append(f if f is not None else torch.full((sample.n_atoms, 3), float("nan"), dtype=torch.float64))
        stresses.append(s if s is not None else torch.zeros(3, 3, dtype=torch.float64))
        stress_mask.append(s is not None)
        volumes.append(sample.volume if sample.volume > 0 else 1.0)
        energies.append(sample.energy)
        n_atoms.append(sample.n_atoms)
        atom_offset += sample.n_atoms
        edge_offset += len(sample.first)
    return {
        "positions": torch.cat(positions).to(dtype),
        "cells": torch.stack(cells).to(dtype),
        "species": torch.cat(species),
        "first": torch.cat(first),
        "second": torch.cat(second),
        "reverse": torch.cat(reverse),
        "shifts": torch.cat(shifts).to(dtype),
        "atom_system": torch.cat(atom_system),
        "edge_system": torch.cat(edge_system),
        "forces": torch.cat(forces).to(dtype),
        "stress": torch.stack(stresses).to(dtype),
        "stress_mask": torch.tensor(stress_mask, dtype=torch.bool),
        "volumes": torch.tensor(volumes, dtype=dtype),
        "energy": torch.tensor(energies, dtype=dtype),
        "n_atoms": torch.tensor(n_atoms, dtype=dtype),
        "n_systems": len(samples),
    }
