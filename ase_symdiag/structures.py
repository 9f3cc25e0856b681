"""Structures as plain arrays, validated once at the ASE edge.

A :class:`Structure` holds what a model needs: atomic numbers, positions (Å,
``(N, 3)`` rows), cell (Å, ``(3, 3)`` rows are lattice vectors, zero rows along
non-periodic directions) and periodicity. The core of ase-symdiag never sees
:class:`ase.Atoms`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ase_symdiag.errors import StructureError

#: a periodic cell whose volume (or area, for 2D periodicity) is below this is degenerate
MIN_CELL_MEASURE = 1e-6

#: Å: two atoms (or an atom and a periodic image of any atom, itself included) closer
#: than this are coincident. No potential is defined there: pair directions d/|d| are
#: 0/0, and models return NaN, or 0 on one call and NaN on the next. The shortest real
#: bond (H2, 0.74 Å) is ~1000x longer, so only duplicated atoms (a file written twice,
#: an atom wrapped onto its own image) are refused, never a compressed structure.
MIN_DISTANCE = 1e-3


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
    cell, a degenerate cell along a periodic direction, or coincident atoms (closer
    than :data:`MIN_DISTANCE`, periodic images included).
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
    pair = coincident_pair(positions, cell, pbc)
    if pair is not None:
        i, j, distance, across = pair
        what = (
            f"atom {i} is {distance:.3g} Å from its own periodic image"
            if i == j
            else f"atoms {i} and {j} are {distance:.3g} Å apart" + (" (periodic images)" if across else "")
        )
        raise StructureError(
            f"{name}: {what}; atoms closer than {MIN_DISTANCE:g} Å are coincident (a duplicated "
            "atom?) and no potential is defined there"
        )
    return Structure(np.array(atoms.numbers, dtype=np.int64), positions, cell, pbc, label=name)


def coincident_pair(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float = MIN_DISTANCE
) -> Optional[Tuple[int, int, float, bool]]:
    """A pair ``(i, j, distance in Å, across a periodic boundary)`` of atoms closer
    than ``cutoff`` (the lowest indices), or None.

    ``positions`` (N, 3), ``cell`` (3, 3) rows (zero rows along non-periodic
    directions), ``pbc`` (3,). Along periodic directions distances are minimum-image:
    positions are wrapped into the cell and the atoms within ``cutoff`` of a face also
    get their image across it, so ``i == j`` means an atom within ``cutoff`` of its own
    image (a lattice spacing below ``cutoff``).
    """
    from scipy.spatial import cKDTree

    n = len(positions)
    points, owner = positions, np.arange(n)
    if pbc.any():
        basis = cell.copy()
        # non-periodic rows: an orthonormal complement, so fractional coordinates exist
        periodic_rows = cell[pbc]
        _, _, vt = np.linalg.svd(periodic_rows)
        complement = vt[len(periodic_rows):]
        basis[~pbc] = complement
        inverse = np.linalg.inv(basis)
        fractional = positions @ inverse
        fractional[:, pbc] -= np.floor(fractional[:, pbc])
        # fractional distance of ``cutoff`` across each lattice plane: cutoff |b_k|
        margin = cutoff * np.linalg.norm(inverse, axis=0)
        shifts = [np.zeros(3)]
        for k in np.nonzero(pbc)[0]:
            shifts = [s + d * np.eye(3)[k] for s in shifts for d in (-1.0, 0.0, 1.0)]
        images, image_owner = [fractional @ basis], [np.arange(n)]
        for shift in shifts:
            if not shift.any():
                continue
            # an atom near the face the shift points away from gets the image across it
            near = np.ones(n, dtype=bool)
            for k in np.nonzero(shift)[0]:
                near &= fractional[:, k] < margin[k] if shift[k] > 0 else fractional[:, k] > 1.0 - margin[k]
            if near.any():
                images.append((fractional[near] + shift) @ basis)
                image_owner.append(np.nonzero(near)[0])
        points, owner = np.concatenate(images), np.concatenate(image_owner)
    pairs = cKDTree(points).query_pairs(cutoff, output_type="ndarray")
    if len(pairs) == 0:
        return None
    # keep pairs with an original atom; an image-image pair repeats an original one
    pairs = pairs[(pairs[:, 0] < n) | (pairs[:, 1] < n)]
    if len(pairs) == 0:
        return None
    a, b = pairs[np.lexsort((owner[pairs[:, 1]], owner[pairs[:, 0]]))][0]
    i, j = sorted((int(owner[a]), int(owner[b])))
    distance = float(np.linalg.norm(points[a] - points[b]))
    return i, j, distance, bool(a >= n or b >= n)


def from_atoms_list(
    images: Sequence, labels: Sequence[str] | None = None, *, frames: Sequence[int] | None = None
) -> list[Structure]:
    """Convert a list of :class:`ase.Atoms`; labels default to ``"<frame>:<name>"``.

    ``<frame>`` is ``frames[i]`` (the frame numbers in the file the images were read
    from) or ``i``; ``<name>`` is ``atoms.info["name"]`` when present, else the
    chemical formula.
    """
    if len(images) == 0:
        raise StructureError("no structures given")
    out = []
    for i, atoms in enumerate(images):
        label = labels[i] if labels is not None else structure_label(atoms, i if frames is None else frames[i])
        out.append(from_atoms(atoms, label=label))
    return out


def read_frames(path: str, index: str = ":") -> tuple[list, list[int]]:
    """Read :class:`ase.Atoms` from an ASE-readable file with one-line errors, and the
    file's frame number (from 0) of each.

    ``index`` is an ASE index string (``"3"``, ``"-1"``, ``"1:"``, ``"::2"``) with
    Python's meaning: an integer out of range, negative or positive, is refused (ASE
    itself reads frame 0 for ``-5`` on a 3-frame extxyz), and a slice selects the
    frames ``range(n)[slice]`` would.
    """
    from ase.io.formats import string2index

    try:
        selection = string2index(str(index))
    except ValueError:
        raise StructureError(f"--index {index!r} is not an ASE index (use e.g. 0, -1, 2:5 or ':')") from None
    if not isinstance(selection, (int, slice)):
        raise StructureError(f"--index {index!r} is not an ASE index (use e.g. 0, -1, 2:5 or ':')")
    if isinstance(selection, int) and selection >= 0:
        # the common single-frame case reads one frame; ASE refuses a positive index out of range
        return _read(path, selection, index), [selection]
    images = _read(path, slice(None), index)
    frames = range(len(images))
    if isinstance(selection, int):
        if not -len(images) <= selection < len(images):
            raise StructureError(f"--index {index} is out of range: '{path}' holds {len(images)} structure(s)")
        numbers = [frames[selection]]
    else:
        numbers = list(frames[selection])
    if not numbers:
        raise StructureError(f"no structures in '{path}' at index {index} (it holds {len(images)})")
    return [images[i] for i in numbers], numbers


def _read(path: str, selection, index: str) -> list:
    """``ase.io.read(path, selection)`` as a list, every failure one line (``index``: as typed)."""
    import ase.io

    if not os.path.exists(path):
        raise StructureError(f"structure file '{path}' does not exist")
    try:
        images = ase.io.read(path, index=selection)
    except (IndexError, StopIteration):
        try:
            count = len(ase.io.read(path, index=":"))
        except Exception:  # the file itself is unreadable: say so below
            count = None
        if count is not None:
            raise StructureError(f"--index {index} is out of range: '{path}' holds {count} structure(s)") from None
        raise StructureError(f"could not read structures from '{path}' with index {index}") from None
    except Exception as error:  # ASE raises many types for unreadable files
        raise StructureError(unreadable_message(path, error)) from None
    images = images if isinstance(images, list) else [images]
    if not images:
        raise StructureError(f"no structures in '{path}' at index {index}")
    return images


#: file endings of models, never structures
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt")


def unreadable_message(path: str, error: Exception) -> str:
    """One line saying that ``path`` is not a structure file ASE reads, and what was expected."""
    detail = " ".join(str(error).split()) or type(error).__name__
    if type(error).__name__ == "UnknownFileTypeError":
        detail = f"ASE does not know the file type '{detail}'"
    hint = ""
    if path.lower().endswith(MODEL_SUFFIXES):
        hint = "; this looks like a model file: give the model first, then the structures"
    return (
        f"could not read structures from '{path}' ({detail}); expected a structure file ASE "
        f"can read (e.g. extxyz, xyz, cif, POSCAR){hint}"
    )


def structure_label(atoms, frame: int) -> str:
    """``"<frame>:<name>"``: ``frame`` the number of ``atoms`` in its file (from 0),
    ``<name>`` its ``info["name"]`` or else its chemical formula."""
    return f"{frame}:{atoms.info.get('name') or atoms.get_chemical_formula()}"


def read_atoms(path: str, index: str = ":") -> list:
    """Read :class:`ase.Atoms` from an ASE-readable file, with one-line errors
    (:func:`read_frames` without the frame numbers)."""
    return read_frames(path, index)[0]


def read_structures(path: str, index: str = ":") -> list[Structure]:
    """Read and validate every structure of an ASE-readable file (extxyz, cif, POSCAR, ...),
    labelled ``"<frame>:<name>"`` with the file's frame numbers."""
    images, frames = read_frames(path, index)
    return from_atoms_list(images, frames=frames)
