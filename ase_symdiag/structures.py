"""Structures as plain arrays, validated once at the ASE edge.

A :class:`Structure` holds what a model needs: atomic numbers, positions (Å,
``(N, 3)`` rows), cell (Å, ``(3, 3)`` rows are lattice vectors, zero rows along
non-periodic directions) and periodicity. The core of ase-symdiag never sees
:class:`ase.Atoms`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ase_symdiag.errors import StructureError

#: a periodic cell whose volume (or area, for 2D periodicity) is below this is degenerate
MIN_CELL_MEASURE = 1e-6


@dataclass(frozen=True)
class Structure:
    """One atomic structure, float64 arrays in Å."""

    numbers: np.ndarray  # (N,) int
    positions: np.ndarray  # (N, 3)
    cell: np.ndarray  # (3, 3), zero rows along non-periodic directions
    pbc: np.ndarray  # (3,) bool
    label: str = ""

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def periodic(self) -> bool:
        """Periodic along all three directions (stress is defined)."""
        return bool(self.pbc.all())

    @property
    def volume(self) -> float:
        """Cell volume in Å^3 (0 unless fully periodic)."""
        return float(abs(np.linalg.det(self.cell))) if self.periodic else 0.0


def from_atoms(atoms, label: str = "") -> Structure:
    """Validate an :class:`ase.Atoms` and convert it to a :class:`Structure`.

    Raises :class:`StructureError` for an empty structure, non-finite positions or
    cell, or a degenerate cell along a periodic direction.
    """
    name = label or atoms.get_chemical_formula() or "structure"
    if len(atoms) == 0:
        raise StructureError(f"{name}: the structure is empty (no atoms)")
    positions = np.array(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        bad = np.nonzero(~np.all(np.isfinite(positions), axis=1))[0]
        raise StructureError(
            f"{name}: positions contain NaN or infinite values (atoms {bad[:5].tolist()})"
        )
    pbc = np.array(atoms.pbc, dtype=bool)
    cell_full = np.array(atoms.cell.array, dtype=np.float64)
    if not np.all(np.isfinite(cell_full)):
        raise StructureError(f"{name}: the cell contains NaN or infinite values")
    cell = np.zeros((3, 3))
    cell[pbc] = cell_full[pbc]
    if pbc.any():
        periodic_rows = cell[pbc]
        gram = periodic_rows @ periodic_rows.T
        measure = float(np.sqrt(max(np.linalg.det(gram), 0.0)))
        if measure < MIN_CELL_MEASURE:
            kind = {1: "length", 2: "area", 3: "volume"}[int(pbc.sum())]
            raise StructureError(
                f"{name}: the cell is degenerate along its periodic directions "
                f"(pbc={pbc.tolist()}, {kind} {measure:.3g}); give non-zero, linearly "
                "independent lattice vectors or switch periodicity off"
            )
    return Structure(np.array(atoms.numbers, dtype=np.int64), positions, cell, pbc, label=name)


def from_atoms_list(images: Sequence, labels: Sequence[str] | None = None) -> list[Structure]:
    """Convert a list of :class:`ase.Atoms`; labels default to ``"<i>:<name>"``.

    ``<name>`` is ``atoms.info["name"]`` when present, else the chemical formula.
    """
    if len(images) == 0:
        raise StructureError("no structures given")
    out = []
    for i, atoms in enumerate(images):
        name = atoms.info.get("name") or atoms.get_chemical_formula()
        label = labels[i] if labels is not None else f"{i}:{name}"
        out.append(from_atoms(atoms, label=label))
    return out


def read_atoms(path: str, index: str = ":") -> list:
    """Read :class:`ase.Atoms` from an ASE-readable file, with one-line errors."""
    import ase.io

    if not os.path.exists(path):
        raise StructureError(f"structure file '{path}' does not exist")
    try:
        images = ase.io.read(path, index=index)
    except (IndexError, StopIteration):
        try:
            count = len(ase.io.read(path, index=":"))
        except Exception:  # the file itself is unreadable: say so below
            count = None
        if count is not None:
            raise StructureError(f"--index {index} is out of range: '{path}' holds {count} structure(s)") from None
        raise StructureError(f"could not read structures from '{path}' with index {index}") from None
    except Exception as error:  # ASE raises many types for unreadable files
        raise StructureError(f"could not read structures from '{path}': {error}") from None
    images = images if isinstance(images, list) else [images]
    if not images:
        raise StructureError(f"no structures in '{path}' at index {index}")
    return images


def read_structures(path: str, index: str = ":") -> list[Structure]:
    """Read and validate every structure of an ASE-readable file (extxyz, cif, POSCAR, ...)."""
    return from_atoms_list(read_atoms(path, index=index))
