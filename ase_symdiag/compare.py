"""Side-by-side comparison of a model's variants: raw, corrected, symmetrized.

For each variant (a :class:`~ase_symdiag.SymDiagCalculator` with ``corrections=`` and/or
``symmetrize=``): the output equivariance errors (docs/methods.md §1, through the
general ASE path, one call per operation), the accuracy against the reference
energies and forces the structures carry (if any), averaged over the same
orientations (the bias-variance identity of docs/methods.md §2: averaging lowers the
orientation-averaged error by the group variance), the number of model evaluations
per step and the measured wall time per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ase_symdiag.drivers.equivariance import calculator_equivariance
from ase_symdiag.o3.operations import haar_rotations
from ase_symdiag.o3.quadrature import parse_quadrature
from ase_symdiag.report import format_table
from ase_symdiag.o3.transforms import back_rotate_vectors


def parse_variant(spec: str) -> dict:
    """``"raw"``, ``"net_force+net_torque"``, ``"sym:3"``, ``"sym:O+net_force"`` ->
    SymDiagCalculator keyword arguments."""
    kwargs: dict = {"corrections": []}
    for part in spec.split("+"):
        part = part.strip()
        if part in ("", "raw"):
            continue
        if part.startswith("sym:"):
            kwargs["symmetrize"] = parse_quadrature(part[4:])
        else:
            kwargs["corrections"].append(part)
    return kwargs


def default_variants(atoms_list) -> List[str]:
    periodic = any(bool(np.all(a.pbc)) for a in atoms_list)
    finite = any(not np.any(a.pbc) for a in atoms_list)
    variants = ["raw", "net_force" + ("+net_torque" if finite else "")]
    if periodic:
        variants.append("point_group")
    variants += ["stochastic", "sym:1", "sym:2", "sym:3"]
    return variants


def _reference(atoms):
    """Reference energy (eV) and forces (eV/Å) carried by ``atoms``, or (None, None)."""
    results = getattr(atoms.calc, "results", None) or {}
    energy = results.get("energy", atoms.info.get("energy"))
    forces = results.get("forces", atoms.arrays.get("forces"))
    return energy, (None if forces is None else np.asarray(forces, dtype=np.float64))


@dataclass
class ComparedVariant:
    """One variant's row in a :class:`Comparison`: cost, equivariance errors and accuracy.

    Not to be confused with :class:`ase_symdiag.md.VariantResult` (one variant's MD run).
    """

    variant: str
    evaluations: int  # model evaluations per step
    seconds_per_step: float
    force_relative: Optional[float]  # worst structure, RMS error per component / max(RMS force, floor)
    energy_max_meV_per_atom: float
    stress_max_GPa: Optional[float]
    energy_mae_meV_per_atom: Optional[float] = None  # vs reference, unrotated
    force_rmse_meV_per_A: Optional[float] = None  # vs reference, unrotated
    force_rmse_rotated_meV_per_A: Optional[float] = None  # vs reference, over the operations


@dataclass
class Comparison:
    """Every variant of one model compared on the same structures and operations."""

    model: str
    n_operations: int
    seed: int
    results: List[ComparedVariant] = field(default_factory=list)

    def table(self) -> str:
        headers = [
            "variant", "evals/step", "s/step", "dF/max(F,1meV/A)", "|dE| meV/at", "dS GPa",
            "E MAE meV/at", "F RMSE meV/A", "F RMSE rotated",
        ]
        rows = [
            [r.variant, r.evaluations, r.seconds_per_step, r.force_relative, r.energy_max_meV_per_atom,
             r.stress_max_GPa, r.energy_mae_meV_per_atom, r.force_rmse_meV_per_A, r.force_rmse_rotated_meV_per_A]
            for r in self.results
        ]
        return (
            f"model {self.model}; {self.n_operations} random O(3) operations (seed {self.seed}); errors are "
            "the worst structure; accuracy against the structures' reference labels\n" + format_table(headers, rows)
        )

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"model": self.model, "n_operations": self.n_operations, "seed": self.seed,
                "results": [asdict(r) for r in self.results]}


def compare_variants(
    model,
    atoms_list: Sequence,
    variants: Optional[Sequence[str]] = None,
    *,
    n_rotations: int = 4,
    seed: int = 0,
    timing_calls: int = 3,
    device: Optional[str] = None,
    progress=None,
    labels: Optional[Sequence[str]] = None,
) -> Comparison:
    """Compare the variants of ``model`` on ``atoms_list`` (ase.Atoms, may carry labels);
    ``labels`` name the structures (default ``"<i>:<name>"``).

    ``model``: anything :func:`ase_symdiag.backends.dispatch.as_evaluator` takes; a
    metatomic model's variants are :class:`~ase_symdiag.SymDiagCalculator` s, any
    other model's :class:`~ase_symdiag.wrappers.SymmetrizedCalculator` s (the same
    averaging and corrections)."""
    from ase_symdiag.backends.dispatch import MetatomicEvaluator, as_evaluator
    from ase_symdiag.calculator import SymDiagCalculator
    from ase_symdiag.structures import structure_label
    from ase_symdiag.wrappers import SymmetrizedCalculator

    atoms_list = list(atoms_list)
    variants = list(variants) if variants else default_variants(atoms_list)
    evaluator = as_evaluator(model, device=device)
    operations = haar_rotations(n_rotations, seed)
    if labels is None:
        labels = [structure_label(a, i) for i, a in enumerate(atoms_list)]
    labelled = list(zip(labels, atoms_list))
    comparison = Comparison(model=evaluator.name, n_operations=n_rotations, seed=seed)
    for spec in variants:
        kwargs = parse_variant(spec)
        if isinstance(evaluator, MetatomicEvaluator):
            calc = SymDiagCalculator(evaluator.handle, **kwargs)
        else:
            calc = SymmetrizedCalculator(evaluator, **kwargs)
        evaluations = calc.quadrature.size if calc.quadrature is not None else 1
        report, predictions = calculator_equivariance(calc, labelled, operations, seed=seed)
        summary = report.summary()
        result = ComparedVariant(
            variant=spec,
            evaluations=evaluations,
            seconds_per_step=_time_per_step(calc, atoms_list[0], timing_calls),
            force_relative=summary["force_rms_per_component_relative"],
            energy_max_meV_per_atom=summary["energy_max_meV_per_atom"],
            stress_max_GPa=summary["stress_max_GPa"],
        )
        _accuracy(result, atoms_list, predictions, operations)
        comparison.results.append(result)
        if progress is not None:
            progress(1)
    return comparison


def _time_per_step(calc, atoms, calls: int) -> float:
    rng = np.random.default_rng(0)
    work = atoms.copy()
    work.calc = calc
    properties = ["energy", "forces"] + (["stress"] if np.all(atoms.pbc) else [])
    calc.calculate(work, properties, ["positions"])  # warm-up
    start = time.perf_counter()
    for _ in range(calls):
        work.positions = atoms.positions + rng.normal(scale=1e-4, size=atoms.positions.shape)
        calc.calculate(work, properties, ["positions"])
    return (time.perf_counter() - start) / calls


def _accuracy(result: ComparedVariant, atoms_list, predictions, operations) -> None:
    energy_errors, force_sq, force_sq_rotated, n_force, n_rotated = [], 0.0, 0.0, 0, 0
    with_identity = np.concatenate([np.eye(3)[None], operations])
    for atoms, prediction in zip(atoms_list, predictions):
        energy, forces = _reference(atoms)
        if energy is not None:
            energy_errors.append(abs(prediction.energy[0] - energy) / len(atoms))
        if forces is not None and prediction.forces is not None:
            force_sq += float(np.sum((prediction.forces[0] - forces) ** 2))
            n_force += forces.size
            back = back_rotate_vectors(prediction.forces, with_identity)
            force_sq_rotated += float(np.sum((back - forces[None]) ** 2))
            n_rotated += back.size
    if energy_errors:
        result.energy_mae_meV_per_atom = 1000.0 * float(np.mean(energy_errors))
    if n_force:
        result.force_rmse_meV_per_A = 1000.0 * float(np.sqrt(force_sq / n_force))
        result.force_rmse_rotated_meV_per_A = 1000.0 * float(np.sqrt(force_sq_rotated / n_rotated))


def plot_comparison(comparison: Comparison, path: str) -> None:
    """Two panels: equivariance error and accuracy against cost (evaluations per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for k, r in enumerate(comparison.results):
        if r.force_relative is not None:
            axes[0].loglog(r.evaluations, max(r.force_relative, 1e-16), "o", color=f"C{k % 10}", label=r.variant)
        if r.force_rmse_rotated_meV_per_A is not None:
            axes[1].semilogx(r.evaluations, r.force_rmse_rotated_meV_per_A, "o", color=f"C{k % 10}", label=r.variant)
    axes[0].set_xlabel("model evaluations per step")
    axes[0].set_ylabel("force equivariance error / RMS force")
    axes[1].set_xlabel("model evaluations per step")
    axes[1].set_ylabel("force RMSE over orientations (meV/A)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"variants of {comparison.model}", fontsize=9)
    atomic_savefig(fig, path)
    plt.close(fig)
