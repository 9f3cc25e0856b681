"""The output equivariance check (docs/methods.md §1).

For each structure x and operation R (Haar-random proper and improper, seeded,
plus any the user passes):

- energy:  dE(R) = E(Rx) - E(x)                       (eV; meV/atom)
- forces:  dF(R) = F(Rx) - F(x) R^T                   (eV/Å)
- stress:  dS(R) = S(Rx) - R S(x) R^T                 (Frobenius norm, eV/Å^3 and GPa;
                                                       fully periodic structures only)

and the same for the model's direct (non-conservative) forces and stress.

Force errors have ONE normalisation throughout ase-symdiag: the RMS *per component*,
``sqrt(mean over atoms i and components a of dF_ia^2)`` (eV/Å), the same as the
spectrum's and the adaptive choice's RMS amplitudes (a per-atom vector norm would be
sqrt(3) larger). The largest per-atom error is reported separately as a vector norm,
``max_i |dF_i|``. Relative force errors divide by ``max(RMS force per component,
RELATIVE_FORCE_FLOOR)``: without the floor, round-off of an exactly equivariant model
divided by the ~1e-15 eV/Å forces of a perfect crystal reads as a 200 % error.

Every metric here is computed from :class:`~ase_symdiag.backends.samples.Predictions`
(index 0 the unrotated structure, index k the structure under operation k-1), however
they were evaluated: batched by :mod:`ase_symdiag.backends.metatomic` (the unrotated
structure in the same batch as its rotated copies, one shared neighbour list) or one
ASE call at a time by :mod:`ase_symdiag.backends.ase`. This module imports no ASE.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ase_symdiag.backends.samples import Predictions
from ase_symdiag.errors import StructureError, UsageError
from ase_symdiag.metrics.floors import RELATIVE_FORCE_FLOOR, RELATIVE_STRESS_FLOOR
from ase_symdiag.o3.operations import haar_rotations, validate_rotations
from ase_symdiag.o3.transforms import GPA, rotate_tensors, rotate_vectors
from ase_symdiag.report import format_table
from ase_symdiag.structures import Structure, from_atoms_list

#: what every summary key means (written next to the summary in the JSON report)
SUMMARY_DEFINITIONS = {
    "energy_max_eV": "max over structures and operations of |E(Rx) - E(x)|, eV",
    "energy_max_meV_per_atom": "max over structures and operations of |E(Rx) - E(x)| / N, meV/atom",
    "force_rms_per_component_eV_per_A": (
        "max over structures of the RMS over operations, atoms and x, y, z components of "
        "F(Rx) - F(x) R^T, eV/A"
    ),
    "force_max_atom_norm_eV_per_A": "max over structures, operations and atoms of |F_i(Rx) - F_i(x) R^T|, eV/A",
    "force_rms_per_component_relative": (
        "max over structures of force_rms_per_component / max(RMS force component of x, "
        f"{RELATIVE_FORCE_FLOOR:g} eV/A)"
    ),
    "stress_max_GPa": "max over structures and operations of ||S(Rx) - R S(x) R^T||_F, GPa",
    "direct_force_rms_per_component_eV_per_A": "as force_rms_per_component_eV_per_A, for the direct forces",
    "direct_force_rms_per_component_relative": "as force_rms_per_component_relative, for the direct forces",
    "direct_stress_max_GPa": "as stress_max_GPa, for the direct stress",
}

#: keys of earlier versions, still readable from ``summary()`` (not written to JSON)
_OLD_SUMMARY_KEYS = {
    "force_rms_eV_per_A": "force_rms_per_component_eV_per_A",
    "force_max_eV_per_A": "force_max_atom_norm_eV_per_A",
    "force_relative": "force_rms_per_component_relative",
    "direct_force_rms_eV_per_A": "direct_force_rms_per_component_eV_per_A",
    "direct_force_relative": "direct_force_rms_per_component_relative",
}


class Summary(dict):
    """The summary dict; the keys of earlier versions (``force_relative``, ...) still
    read, but only the current ones are iterated and written."""

    def __missing__(self, key):
        if key in _OLD_SUMMARY_KEYS:
            return self[_OLD_SUMMARY_KEYS[key]]
        raise KeyError(key)


def worst(values: Sequence[Optional[float]]) -> Optional[float]:
    """Largest value, ignoring ``None`` (output absent); NaN if any value is NaN.

    ``max`` would drop a NaN depending on its position, and ``nan > limit`` is false:
    a reduction over structures must never turn an unmeasurable value into a pass.
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    if any(math.isnan(v) for v in present):
        return math.nan
    return max(present)


def _relative(value: float, reference: float, floor: float) -> float:
    """``value / max(reference, floor)`` (NaN stays NaN)."""
    return value / max(reference, floor) if not math.isnan(reference) else math.nan


@dataclass
class VectorErrors:
    """Errors of a per-atom vector output (forces), over K operations."""

    rms_per_component: float  # eV/Å, RMS over operations, atoms and x, y, z components
    max_atom_norm: float  # eV/Å, max over operations and atoms of |dF_i|
    reference_rms_per_component: float  # eV/Å, RMS force component of the unrotated structure
    relative: float  # rms_per_component / max(reference_rms_per_component, RELATIVE_FORCE_FLOOR)
    per_operation_rms_per_component: List[float]  # eV/Å, (K,)
    relative_floor: float = RELATIVE_FORCE_FLOOR  # eV/Å

    # names of earlier versions (read-only)
    @property
    def rms(self) -> float:
        return self.rms_per_component

    @property
    def max(self) -> float:
        return self.max_atom_norm

    @property
    def reference_rms(self) -> float:
        return self.reference_rms_per_component

    @property
    def per_operation_rms(self) -> List[float]:
        return self.per_operation_rms_per_component

    @property
    def relative_denominator(self) -> float:
        """eV/Å: what ``relative`` divides by."""
        return max(self.reference_rms_per_component, self.relative_floor)


@dataclass
class TensorErrors:
    """Errors of a rank-2 output (stress), over K operations."""

    max: float  # eV/Å^3, max over operations of ||dS||_F
    max_gpa: float
    reference_norm: float  # eV/Å^3, ||S(x)||_F
    relative: float  # max / max(reference_norm, RELATIVE_STRESS_FLOOR)
    per_operation: List[float]  # eV/Å^3, (K,)
    relative_floor: float = RELATIVE_STRESS_FLOOR  # eV/Å^3


@dataclass
class StructureErrors:
    """Equivariance errors of one structure."""

    label: str
    n_atoms: int
    periodic: bool
    energy_max: float  # eV, max_R |dE(R)|
    energy_max_per_atom: float  # meV/atom
    per_operation_energy: List[float]
    forces: Optional[VectorErrors] = None
    stress: Optional[TensorErrors] = None
    direct_forces: Optional[VectorErrors] = None
    direct_stress: Optional[TensorErrors] = None
    worst_operation: int = 0  # index into the report's operations (largest force error)


#: table header of the relative force error: RMS error over max(RMS force, floor)
RELATIVE_HEADER = f"dF/max(F,{RELATIVE_FORCE_FLOOR * 1000:g}meV/A)"


@dataclass
class EquivarianceReport:
    """Result of :func:`ase_symdiag.drivers.equivariance.check_equivariance`; ``to_dict()`` for JSON, ``table()`` for people."""

    model: str
    dtype: str
    device: str
    seed: Optional[int]
    operations: np.ndarray  # (K, 3, 3)
    structures: List[StructureErrors] = field(default_factory=list)

    @property
    def n_operations(self) -> int:
        return len(self.operations)

    def summary(self) -> dict:
        """Worst values over all structures (None where no structure has the output,
        NaN if any structure's value is NaN); keys in :data:`SUMMARY_DEFINITIONS`."""
        s = self.structures
        return Summary(
            {
                "energy_max_eV": worst([r.energy_max for r in s]),
                "energy_max_meV_per_atom": worst([r.energy_max_per_atom for r in s]),
                "force_rms_per_component_eV_per_A": worst([r.forces.rms_per_component if r.forces else None for r in s]),
                "force_max_atom_norm_eV_per_A": worst([r.forces.max_atom_norm if r.forces else None for r in s]),
                "force_rms_per_component_relative": worst([r.forces.relative if r.forces else None for r in s]),
                "stress_max_GPa": worst([r.stress.max_gpa if r.stress else None for r in s]),
                "direct_force_rms_per_component_eV_per_A": worst(
                    [r.direct_forces.rms_per_component if r.direct_forces else None for r in s]
                ),
                "direct_force_rms_per_component_relative": worst(
                    [r.direct_forces.relative if r.direct_forces else None for r in s]
                ),
                "direct_stress_max_GPa": worst([r.direct_stress.max_gpa if r.direct_stress else None for r in s]),
            }
        )

    def to_dict(self) -> dict:
        n_proper = int((np.linalg.det(self.operations) > 0).sum()) if self.n_operations else 0
        return {
            "model": self.model,
            "dtype": self.dtype,
            "device": self.device,
            "seed": self.seed,
            "n_operations": self.n_operations,
            "n_proper": n_proper,
            "n_improper": self.n_operations - n_proper,
            "operations": self.operations.tolist(),
            "summary": dict(self.summary()),
            "definitions": SUMMARY_DEFINITIONS,
            "relative_force_floor_eV_per_A": RELATIVE_FORCE_FLOOR,
            "relative_stress_floor_eV_per_A3": RELATIVE_STRESS_FLOOR,
            "structures": [asdict(r) for r in self.structures],
        }

    def table(self) -> str:
        has_stress = any(r.stress for r in self.structures)
        has_direct = any(r.direct_forces for r in self.structures)
        headers = ["structure", "atoms", "|dE| meV/at", "dF rms/comp eV/A", "max|dF_i| eV/A", RELATIVE_HEADER]
        if has_stress:
            headers.append("dS GPa")
        if has_direct:
            headers += ["direct dF rms/comp", "direct " + RELATIVE_HEADER]
        rows = []
        for r in self.structures:
            row = [
                r.label,
                r.n_atoms,
                r.energy_max_per_atom,
                r.forces.rms_per_component if r.forces else None,
                r.forces.max_atom_norm if r.forces else None,
                r.forces.relative if r.forces else None,
            ]
            if has_stress:
                row.append(r.stress.max_gpa if r.stress else None)
            if has_direct:
                row += [
                    r.direct_forces.rms_per_component if r.direct_forces else None,
                    r.direct_forces.relative if r.direct_forces else None,
                ]
            rows.append(row)
        s = self.summary()
        summary_row = [
            "worst",
            "",
            s["energy_max_meV_per_atom"],
            s["force_rms_per_component_eV_per_A"],
            s["force_max_atom_norm_eV_per_A"],
            s["force_rms_per_component_relative"],
        ]
        if has_stress:
            summary_row.append(s["stress_max_GPa"])
        if has_direct:
            summary_row += [s["direct_force_rms_per_component_eV_per_A"], s["direct_force_rms_per_component_relative"]]
        rows.append(summary_row)
        n_proper = int((np.linalg.det(self.operations) > 0).sum())
        head = (
            f"model {self.model} ({self.dtype}, {self.device}); {self.n_operations} O(3) "
            f"operations ({n_proper} proper, {self.n_operations - n_proper} improper), "
            f"seed {self.seed}"
        )
        note = (
            "dF rms/comp: RMS over operations, atoms and x, y, z of F(Rx) - F(x) R^T; "
            f"{RELATIVE_HEADER}: that over the larger of the RMS force component and "
            f"{RELATIVE_FORCE_FLOOR * 1000:g} meV/A"
        )
        return head + "\n" + note + "\n" + format_table(headers, rows)


def _vector_errors(values: np.ndarray, rotations: np.ndarray) -> VectorErrors:
    """``values`` (K+1, N, 3) with index 0 unrotated; ``rotations`` (K, 3, 3)."""
    reference = values[0]
    diff = values[1:] - rotate_vectors(np.broadcast_to(reference, values[1:].shape), rotations)
    reference_rms = float(np.sqrt(np.mean(reference**2)))
    per_op = np.sqrt(np.mean(diff**2, axis=(1, 2)))
    rms = float(np.sqrt(np.mean(diff**2)))
    return VectorErrors(
        rms_per_component=rms,
        max_atom_norm=float(np.linalg.norm(diff, axis=2).max()),
        reference_rms_per_component=reference_rms,
        relative=_relative(rms, reference_rms, RELATIVE_FORCE_FLOOR),
        per_operation_rms_per_component=per_op.tolist(),
    )


def _tensor_errors(values: np.ndarray, rotations: np.ndarray) -> TensorErrors:
    """``values`` (K+1, 3, 3) with index 0 unrotated; ``rotations`` (K, 3, 3)."""
    reference = values[0]
    diff = values[1:] - rotate_tensors(np.broadcast_to(reference, values[1:].shape), rotations)
    per_op = np.linalg.norm(diff, axis=(1, 2))
    ref = float(np.linalg.norm(reference))
    largest = float(per_op.max())
    return TensorErrors(
        max=largest,
        max_gpa=largest / GPA,
        reference_norm=ref,
        relative=_relative(largest, ref, RELATIVE_STRESS_FLOOR),
        per_operation=per_op.tolist(),
    )


def structure_errors(structure: Structure, predictions: Predictions, rotations: np.ndarray) -> StructureErrors:
    """Errors from predictions whose first entry is the unrotated structure.

    ``predictions`` holds K+1 evaluations: index 0 is ``x``, index k is ``R_{k-1} x``.
    """
    d_energy = predictions.energy[1:] - predictions.energy[0]
    result = StructureErrors(
        label=structure.label,
        n_atoms=len(structure),
        periodic=structure.periodic,
        energy_max=float(np.abs(d_energy).max()),
        energy_max_per_atom=float(np.abs(d_energy).max() / len(structure) * 1000.0),
        per_operation_energy=d_energy.tolist(),
    )
    if predictions.forces is not None:
        result.forces = _vector_errors(predictions.forces, rotations)
        result.worst_operation = int(np.argmax(result.forces.per_operation_rms_per_component))
    if predictions.stress is not None:
        result.stress = _tensor_errors(predictions.stress, rotations)
    if predictions.direct_forces is not None:
        result.direct_forces = _vector_errors(predictions.direct_forces, rotations)
    if predictions.direct_stress is not None:
        result.direct_stress = _tensor_errors(predictions.direct_stress, rotations)
    return result


def as_structures(structures) -> List[Structure]:
    """Accept an ase.Atoms, a Structure, or a sequence of either (validated)."""
    if isinstance(structures, Structure) or hasattr(structures, "get_positions"):
        structures = [structures]
    structures = list(structures)
    if not structures:
        raise StructureError("no structures given")
    if all(isinstance(s, Structure) for s in structures):
        return structures
    return from_atoms_list(structures)


def check_operations(
    n_rotations: int, seed: Optional[int], rotations: Optional[Sequence] = None, include_inversion: bool = True
) -> np.ndarray:
    """The operations of a check, (K, 3, 3): ``n_rotations`` Haar-random ones from
    ``seed`` (every second improper unless ``include_inversion=False``), then the validated
    ``rotations``. Raises :class:`UsageError` when there are none."""
    operations = haar_rotations(n_rotations, seed, include_inversion=include_inversion)
    if rotations is not None:
        operations = np.concatenate([operations, validate_rotations(rotations)])
    if len(operations) == 0:
        raise UsageError("no operations to check: give n_rotations > 0 or rotations")
    return operations


def errors_report(model: str, dtype: str, device: str, seed: Optional[int], operations: np.ndarray,
                  structures: Sequence[Structure], predictions: Sequence[Predictions]) -> EquivarianceReport:
    """The :class:`EquivarianceReport` of ``predictions`` (one per structure, each with
    K+1 evaluations: the unrotated structure, then each of ``operations`` (K, 3, 3))."""
    report = EquivarianceReport(model=model, dtype=dtype, device=device, seed=seed, operations=operations)
    for structure, prediction in zip(structures, predictions):
        report.structures.append(structure_errors(structure, prediction, operations))
    return report
