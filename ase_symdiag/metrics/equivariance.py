"""The output equivariance check (METHODS.md section 1).

For each structure x and operation R (Haar-random proper and improper, seeded,
plus any the user passes):

- energy:  dE(R) = E(Rx) - E(x)                       (eV; meV/atom)
- forces:  dF(R) = F(Rx) - F(x) R^T                   (eV/Å; RMS, max over atoms,
                                                       and RMS / RMS force of x)
- stress:  dS(R) = S(Rx) - R S(x) R^T                 (Frobenius norm, eV/Å^3 and GPa;
                                                       fully periodic structures only)

and the same for the model's direct (non-conservative) forces and stress. The
unrotated structure is evaluated in the same batch as its rotated copies, all
sharing one neighbour list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import numpy as np
from ase.units import GPa

from ase_symdiag.backends.metatomic.evaluation import Predictions, evaluate
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.o3.operations import haar_rotations, validate_rotations
from ase_symdiag.report import format_table
from ase_symdiag.structures import Structure, from_atoms, from_atoms_list
from ase_symdiag.o3.transforms import rotate_tensors, rotate_vectors


@dataclass
class VectorErrors:
    """Errors of a per-atom vector output (forces), over K operations."""

    rms: float  # eV/Å, RMS over operations, atoms and components
    max: float  # eV/Å, max over operations and atoms of |dF_i|
    reference_rms: float  # eV/Å, RMS force of the unrotated structure
    relative: float  # rms / reference_rms (inf if the reference is zero)
    per_operation_rms: List[float]


@dataclass
class TensorErrors:
    """Errors of a rank-2 output (stress), over K operations."""

    max: float  # eV/Å^3, max over operations of ||dS||_F
    max_gpa: float
    reference_norm: float  # eV/Å^3, ||S(x)||_F
    relative: float
    per_operation: List[float]


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


@dataclass
class EquivarianceReport:
    """Result of :func:`check_equivariance`; ``to_dict()`` for JSON, ``table()`` for people."""

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
        """Worst values over all structures (None where no structure has the output)."""

        def worst(values):
            values = [v for v in values if v is not None]
            return max(values) if values else None

        s = self.structures
        return {
            "energy_max_eV": worst([r.energy_max for r in s]),
            "energy_max_meV_per_atom": worst([r.energy_max_per_atom for r in s]),
            "force_rms_eV_per_A": worst([r.forces.rms if r.forces else None for r in s]),
            "force_max_eV_per_A": worst([r.forces.max if r.forces else None for r in s]),
            "force_relative": worst([r.forces.relative if r.forces else None for r in s]),
            "stress_max_GPa": worst([r.stress.max_gpa if r.stress else None for r in s]),
            "direct_force_rms_eV_per_A": worst(
                [r.direct_forces.rms if r.direct_forces else None for r in s]
            ),
            "direct_force_relative": worst(
                [r.direct_forces.relative if r.direct_forces else None for r in s]
            ),
            "direct_stress_max_GPa": worst(
                [r.direct_stress.max_gpa if r.direct_stress else None for r in s]
            ),
        }

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
            "summary": self.summary(),
            "structures": [asdict(r) for r in self.structures],
        }

    def table(self) -> str:
        has_stress = any(r.stress for r in self.structures)
        has_direct = any(r.direct_forces for r in self.structures)
        headers = ["structure", "atoms", "|dE| meV/at", "dF rms eV/A", "dF max eV/A", "dF/F rms"]
        if has_stress:
            headers.append("dS GPa")
        if has_direct:
            headers += ["direct dF rms", "direct dF/F"]
        rows = []
        for r in self.structures:
            row = [
                r.label,
                r.n_atoms,
                r.energy_max_per_atom,
                r.forces.rms if r.forces else None,
                r.forces.max if r.forces else None,
                r.forces.relative if r.forces else None,
            ]
            if has_stress:
                row.append(r.stress.max_gpa if r.stress else None)
            if has_direct:
                row += [
                    r.direct_forces.rms if r.direct_forces else None,
                    r.direct_forces.relative if r.direct_forces else None,
                ]
            rows.append(row)
        s = self.summary()
        summary_row = [
            "worst",
            "",
            s["energy_max_meV_per_atom"],
            s["force_rms_eV_per_A"],
            s["force_max_eV_per_A"],
            s["force_relative"],
        ]
        if has_stress:
            summary_row.append(s["stress_max_GPa"])
        if has_direct:
            summary_row += [s["direct_force_rms_eV_per_A"], s["direct_force_relative"]]
        rows.append(summary_row)
        n_proper = int((np.linalg.det(self.operations) > 0).sum())
        head = (
            f"model {self.model} ({self.dtype}, {self.device}); {self.n_operations} O(3) "
            f"operations ({n_proper} proper, {self.n_operations - n_proper} improper), "
            f"seed {self.seed}"
        )
        return head + "\n" + format_table(headers, rows)


def _vector_errors(values: np.ndarray, rotations: np.ndarray) -> VectorErrors:
    reference = values[0]
    diff = values[1:] - rotate_vectors(np.broadcast_to(reference, values[1:].shape), rotations)
    reference_rms = float(np.sqrt(np.mean(reference**2)))
    per_op = np.sqrt(np.mean(diff**2, axis=(1, 2)))
    rms = float(np.sqrt(np.mean(diff**2)))
    return VectorErrors(
        rms=rms,
        max=float(np.linalg.norm(diff, axis=2).max()),
        reference_rms=reference_rms,
        relative=rms / reference_rms if reference_rms > 0 else float("inf") if rms > 0 else 0.0,
        per_operation_rms=per_op.tolist(),
    )


def _tensor_errors(values: np.ndarray, rotations: np.ndarray) -> TensorErrors:
    reference = values[0]
    diff = values[1:] - rotate_tensors(np.broadcast_to(reference, values[1:].shape), rotations)
    per_op = np.linalg.norm(diff, axis=(1, 2))
    ref = float(np.linalg.norm(reference))
    worst = float(per_op.max())
    return TensorErrors(
        max=worst,
        max_gpa=worst / GPa,
        reference_norm=ref,
        relative=worst / ref if ref > 0 else float("inf") if worst > 0 else 0.0,
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
        result.worst_operation = int(np.argmax(result.forces.per_operation_rms))
    if predictions.stress is not None:
        result.stress = _tensor_errors(predictions.stress, rotations)
    if predictions.direct_forces is not None:
        result.direct_forces = _vector_errors(predictions.direct_forces, rotations)
    if predictions.direct_stress is not None:
        result.direct_stress = _tensor_errors(predictions.direct_stress, rotations)
    return result


def as_structures(structures) -> List[Structure]:
    """Accept an Atoms, a Structure, or a sequence of either."""
    from ase import Atoms

    if isinstance(structures, (Atoms, Structure)):
        structures = [structures]
    structures = list(structures)
    if all(isinstance(s, Structure) for s in structures):
        if not structures:
            from ase_symdiag.errors import StructureError

            raise StructureError("no structures given")
        return structures
    return from_atoms_list(structures)


def check_equivariance(
    model,
    structures,
    *,
    n_rotations: int = 8,
    seed: Optional[int] = 0,
    rotations: Optional[Sequence] = None,
    improper: bool = True,
    direct: bool = True,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    batch_size: int = 16,
    progress: bool = False,
) -> EquivarianceReport:
    """Check how well ``model`` transforms under O(3) on ``structures``.

    ``model``: a metatomic ``.pt`` path, an AtomisticModel or a :class:`ModelHandle`.
    ``structures``: ase.Atoms or a list of them. Uses ``n_rotations`` Haar-random
    operations from ``seed`` (every second one improper unless ``improper=False``)
    followed by any ``rotations`` the user passes (validated to be orthogonal).
    ``direct``: also check the model's non-conservative forces/stress if it has them.
    """
    handle = model if isinstance(model, ModelHandle) else ModelHandle.load(model, device=device, dtype=dtype)
    items = as_structures(structures)
    operations = haar_rotations(n_rotations, seed, improper=improper)
    if rotations is not None:
        operations = np.concatenate([operations, validate_rotations(rotations)])
    if len(operations) == 0:
        raise ValueError("no operations to check: give n_rotations > 0 or rotations")
    for item in items:
        handle.check_types(item.numbers, item.label)
    with_identity = np.concatenate([np.eye(3)[None], operations])
    report = EquivarianceReport(
        model=handle.source,
        dtype=str(handle.dtype).replace("torch.", ""),
        device=str(handle.device),
        seed=seed,
        operations=operations,
    )
    bar = _progress_bar(len(items) * len(with_identity), progress)
    try:
        for item in items:
            predictions = evaluate(
                handle,
                item,
                with_identity,
                forces=True,
                stress=True,
                direct=direct,
                batch_size=batch_size,
                progress=bar.update if bar is not None else None,
            )
            report.structures.append(structure_errors(item, predictions, operations))
    finally:
        if bar is not None:
            bar.close()
    return report


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="model evaluations", unit="eval", leave=False)


def rotated_atoms(atoms, rotation: np.ndarray):
    """A copy of ``atoms`` (no calculator) with positions and cell rotated, ``x' = x R^T``."""
    copy = atoms.copy()
    copy.calc = None
    copy.set_cell(np.asarray(atoms.cell.array) @ rotation.T, scale_atoms=False)
    copy.positions = np.asarray(atoms.positions) @ rotation.T
    return copy


def calculator_predictions(calculator, atoms, operations: np.ndarray) -> Predictions:
    """Energy, forces and (fully periodic only) stress of ``atoms`` rotated by each
    operation, through any ASE calculator, one call per operation."""
    from ase.calculators.calculator import PropertyNotImplementedError

    periodic = bool(np.all(atoms.pbc))
    energy, forces, stress = [], [], []
    for rotation in operations:
        image = rotated_atoms(atoms, rotation)
        image.calc = calculator
        energy.append(image.get_potential_energy())
        if forces is not None:
            try:
                forces.append(np.array(image.get_forces(), dtype=np.float64))
            except PropertyNotImplementedError:
                forces = None
        if periodic and stress is not None:
            try:
                stress.append(np.array(image.get_stress(voigt=False), dtype=np.float64))
            except PropertyNotImplementedError:
                stress = None
    return Predictions(
        energy=np.array(energy, dtype=np.float64),
        forces=np.stack(forces) if forces else None,
        stress=np.stack(stress) if periodic and stress else None,
    )


def calculator_equivariance(calculator, labelled, operations: np.ndarray, *, seed=None, dtype: str = "float64"):
    """:class:`EquivarianceReport` of any ASE calculator on ``[(label, Atoms), ...]``.

    The slow, general path (one ASE call per operation) for calculators that are not
    a bare metatomic model, e.g. a symmetrized or corrected :class:`SymDiagCalculator`
    or ASE's own. Returns the report and the predictions of each structure.
    """
    report = EquivarianceReport(
        model=type(calculator).__name__, dtype=dtype, device="cpu", seed=seed, operations=operations
    )
    with_identity = np.concatenate([np.eye(3)[None], operations])
    predictions = []
    for label, atoms in labelled:
        structure = from_atoms(atoms, label=label)
        prediction = calculator_predictions(calculator, atoms, with_identity)
        predictions.append(prediction)
        report.structures.append(structure_errors(structure, prediction, operations))
    return report, predictions
