"""Rotational spread as an uncertainty: does it say where the model is wrong? (docs/methods.md §9)

For each structure with reference values (energy, forces), the model's prediction
``y(x)`` (unrotated, what a user runs; or the symmetrized mean) is compared with the
reference, and its error with the rotational spread ``std`` over a quadrature
(docs/methods.md §2, the calculator's ``energy_std``/``forces_std``):

- **rank correlation**: Spearman's rho of the spread with the absolute error, per
  structure (energy per atom, ``|E - E_ref| / N`` against ``std_E / N``) and per atom
  (``|F_i - F_i,ref|`` against ``sqrt(sum_a std_ia^2)``). Undefined (None, never a
  number) when the spread is constant, e.g. zero for an exactly equivariant model.
- **coverage**: the fraction of errors within ``k`` standard deviations
  (``|err| <= k std``; forces per atom: per Cartesian component; forces per
  structure: RMS error against RMS spread). Errors drawn as
  ``N(0, std^2)`` give 0.683, 0.954, 0.997 for k = 1, 2, 3.
- **baseline**: the same rank correlation for the predicted force magnitude
  (``|F_i|``, RMS force of a structure): a spread that correlates no better than
  that says only "large forces, large errors".
- **calibration curve**: for nominal Gaussian coverages ``p``, the observed fraction
  within ``z_p std`` (``z_p = sqrt(2) erfinv(p)``); a calibrated spread lies on the
  diagonal, an overconfident one (spread too small) below it.

A model's own ``energy_uncertainty`` output (metatrain's LLPR, exported with the
model) is measured the same way on the same structures, when the model has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ase_symdiag.errors import StructureError, UsageError
from ase_symdiag.structures import Structure

#: k of the reported coverages
COVERAGE_K = (1.0, 2.0, 3.0)
#: nominal coverages of the calibration curve
CALIBRATION_LEVELS = tuple(np.round(np.linspace(0.05, 0.95, 19), 2))
PREDICTIONS = ("raw", "symmetrized")
#: a spread whose RMS is at most ROUND_OFF[quantity] x (machine epsilon of the model's
#: dtype) x (RMS of the predicted values) is round-off: an equivariant model's, its ranks
#: noise. Forces are sums of pair terms much larger than the net force, which cancel:
#: an exactly equivariant Morse cluster in float64 has a force spread of 11 eps x the
#: RMS force (energy: 0.9 eps); the shipped float32 ethanol PET trained with
#: augmentation has 3e4 eps (forces) and 130 eps (energy).
ROUND_OFF = {"energy": 10.0, "forces": 1000.0}


def spearman(spread: np.ndarray, error: np.ndarray) -> Optional[float]:
    """Spearman's rank correlation of ``spread`` and ``error`` (1-D, same length),
    ties ranked by their average; None when either is constant or there are fewer
    than 3 values (a correlation that was not measured)."""
    from scipy.stats import rankdata

    spread, error = np.asarray(spread, float).ravel(), np.asarray(error, float).ravel()
    if spread.shape != error.shape:
        raise UsageError(f"spearman: {spread.shape} spreads against {error.shape} errors")
    if len(spread) < 3 or np.ptp(spread) == 0 or np.ptp(error) == 0:
        return None
    a, b = rankdata(spread), rankdata(error)
    return float(np.corrcoef(a, b)[0, 1])


def coverage(error: np.ndarray, spread: np.ndarray, k: float) -> float:
    """Fraction of ``|error| <= k * spread`` (elementwise, same shapes)."""
    error, spread = np.abs(np.asarray(error, float)), np.asarray(spread, float)
    if error.shape != spread.shape or error.size == 0:
        raise UsageError(f"coverage: {error.shape} errors against {spread.shape} spreads")
    return float(np.mean(error <= k * spread))


def calibration_curve(
    error: np.ndarray, spread: np.ndarray, levels: Sequence[float] = CALIBRATION_LEVELS
) -> Tuple[np.ndarray, np.ndarray]:
    """``(nominal, observed)``: for each nominal Gaussian coverage ``p`` in ``levels``,
    the fraction of ``|error| <= z_p spread`` with ``z_p = sqrt(2) erfinv(p)``."""
    from scipy.special import erfinv

    levels = np.asarray(levels, float)
    observed = np.array([coverage(error, spread, np.sqrt(2.0) * erfinv(p)) for p in levels])
    return levels, observed


@dataclass
class SpreadQuality:
    """How well one spread tracks one kind of error (``n`` samples)."""

    quantity: str
    n: int
    spearman: Optional[float]
    coverage: Dict[float, float]
    error_rms: float
    spread_rms: float
    calibration: Tuple[np.ndarray, np.ndarray]
    #: why ``spearman`` is None: "constant" or "round-off" (an equivariant model's spread)
    undefined: Optional[str] = None
    #: Spearman of the predicted magnitude (|F_i|, RMS force) with the error: the
    #: baseline a spread must beat to say more than "large forces, large errors"
    baseline: Optional[float] = None

    @classmethod
    def measure(
        cls, quantity: str, rank_error, rank_spread, error, spread, round_off: float = 0.0, magnitude=None
    ) -> "SpreadQuality":
        """Ranks from ``rank_*`` (one value per structure or atom), coverage and
        calibration from the signed ``error`` against ``spread`` (same shapes). A
        spread whose RMS is at most ``round_off`` is the round-off of an equivariant
        model: its ranks are noise, and the correlation is not reported."""
        spread_rms = float(np.sqrt(np.mean(np.square(spread))))
        rho = None if spread_rms <= round_off else spearman(rank_spread, rank_error)
        undefined = "round-off" if spread_rms <= round_off else ("constant" if rho is None else None)
        return cls(
            quantity=quantity,
            n=int(np.size(rank_error)),
            spearman=rho,
            undefined=undefined,
            baseline=None if magnitude is None else spearman(magnitude, rank_error),
            coverage={k: coverage(error, spread, k) for k in COVERAGE_K},
            error_rms=float(np.sqrt(np.mean(np.square(error)))),
            spread_rms=spread_rms,
            calibration=calibration_curve(error, spread),
        )

    def row(self) -> list:
        rho = f"undefined ({self.undefined})" if self.spearman is None else self.spearman
        return (
            [self.quantity, self.n, rho, "-" if self.baseline is None else self.baseline]
            + [self.coverage[k] for k in COVERAGE_K] + [self.error_rms, self.spread_rms]
        )

    def to_dict(self) -> dict:
        return {
            "quantity": self.quantity,
            "n": self.n,
            "spearman": self.spearman,
            "spearman_undefined": self.undefined,
            "spearman_magnitude_baseline": self.baseline,
            "coverage": {f"{k:g}": v for k, v in self.coverage.items()},
            "error_rms": self.error_rms,
            "spread_rms": self.spread_rms,
            "calibration": {"nominal": self.calibration[0].tolist(), "observed": self.calibration[1].tolist()},
        }


@dataclass
class UncertaintyReport:
    """Rotational spread (and the model's own uncertainty) against actual errors."""

    model: str
    quadrature: str
    prediction: str
    n_structures: int
    qualities: List[SpreadQuality] = field(default_factory=list)
    per_structure: List[dict] = field(default_factory=list)

    def table(self) -> str:
        from ase_symdiag.report import format_table

        headers = ["spread vs error", "n", "spearman", "spearman |F|"] + [f"within {k:g} std" for k in COVERAGE_K] + ["error RMS", "spread RMS"]
        return (
            f"error of the {self.prediction} prediction against the reference, and the spread over "
            f"quadrature {self.quadrature}; {self.n_structures} structures (energies meV/atom, forces meV/A)\n"
            + format_table(headers, [q.row() for q in self.qualities])
            + "\nspearman |F|: rank correlation of the predicted force magnitude with the error (a baseline)"
            + f"\nerrors drawn as N(0, std^2) would give {', '.join('%.3f' % _gaussian(k) for k in COVERAGE_K)}"
        )

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "quadrature": self.quadrature,
            "prediction": self.prediction,
            "n_structures": self.n_structures,
            "qualities": [q.to_dict() for q in self.qualities],
            "structures": self.per_structure,
        }


def _gaussian(k: float) -> float:
    from scipy.special import erf

    return float(erf(k / np.sqrt(2.0)))


def reference_values(atoms) -> Tuple[Optional[float], Optional[np.ndarray]]:
    """The reference energy (eV) and forces (N, 3, eV/Å) stored with an ASE ``Atoms``
    (its calculator's results as ``ase.io.read`` leaves them, else ``info['energy']`` /
    ``arrays['forces']``); None where absent."""
    results = getattr(getattr(atoms, "calc", None), "results", None) or {}
    energy = results.get("energy", atoms.info.get("energy"))
    forces = results.get("forces", atoms.arrays.get("forces"))
    return (
        None if energy is None else float(energy),
        None if forces is None else np.asarray(forces, dtype=float).reshape(-1, 3),
    )


def rotational_uncertainty(
    model,
    structures: Sequence[Structure],
    energies: Sequence[Optional[float]],
    forces: Sequence[Optional[np.ndarray]],
    *,
    quadrature="lebedev:2",
    prediction: str = "raw",
    batch_size: int = 16,
) -> UncertaintyReport:
    """Measure the rotational spread (and the model's ``energy_uncertainty``, if any)
    as an uncertainty against reference ``energies`` (eV) and ``forces`` ((N, 3) eV/Å)
    of ``structures``. ``prediction``: whose error, the unrotated model's (``raw``)
    or the symmetrized mean's. Structures without reference forces count for the
    energy only; a structure without either is an error naming it."""
    from ase_symdiag.backends.metatomic.evaluation import evaluate
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.metrics.symmetrize import symmetrized_prediction
    from ase_symdiag.o3.quadrature import resolve_quadrature

    if prediction not in PREDICTIONS:
        raise UsageError(f"prediction must be one of {PREDICTIONS}, got '{prediction}'")
    if not (len(structures) == len(energies) == len(forces)):
        raise UsageError("give one reference energy and one set of reference forces (or None) per structure")
    handle = model if isinstance(model, ModelHandle) else ModelHandle.load(model)
    quadrature = resolve_quadrature(quadrature)
    if quadrature is None:
        raise UsageError("the rotational spread needs a quadrature")
    per_structure = []
    e_err, e_std, own_u, f_err, f_std = [], [], [], [], []
    e_scale, f_scale = [], []  # predicted values: the scale of their round-off
    for structure, energy, reference in zip(structures, energies, forces):
        label = structure.label or "structure"
        if energy is None and reference is None:
            raise StructureError(f"{label}: no reference energy or forces (store them in the structure file)")
        if reference is not None and reference.shape != (len(structure), 3):
            raise StructureError(f"{label}: reference forces have shape {reference.shape}, expected ({len(structure)}, 3)")
        sym = symmetrized_prediction(handle, structure, quadrature, stress=False, keep_samples=False, batch_size=batch_size)
        raw = evaluate(handle, structure, forces=reference is not None, stress=False, uncertainty=True)
        e_pred = raw.energy[0] if prediction == "raw" else sym.mean["energy"]
        n = len(structure)
        row = {"label": structure.label, "n_atoms": n, "energy_std_meV_per_atom": 1000 * float(sym.std["energy"]) / n}
        if energy is not None:
            e_err.append(1000 * (e_pred - energy) / n)
            e_scale.append(1000 * float(e_pred) / n)
            e_std.append(1000 * float(sym.std["energy"]) / n)
            row["energy_error_meV_per_atom"] = e_err[-1]
            if raw.energy_uncertainty is not None:
                own_u.append(1000 * float(raw.energy_uncertainty[0]) / n)
                row["energy_uncertainty_meV_per_atom"] = own_u[-1]
        if reference is not None:
            f_pred = raw.forces[0] if prediction == "raw" else sym.mean["forces"]
            f_err.append(1000 * (f_pred - reference))
            f_scale.append(1000 * f_pred)
            f_std.append(1000 * sym.std["forces"])
            row["force_error_rms_meV_per_A"] = float(np.sqrt(np.mean(f_err[-1] ** 2)))
            row["force_std_rms_meV_per_A"] = float(np.sqrt(np.mean(f_std[-1] ** 2)))
        per_structure.append(row)
    report = UncertaintyReport(handle.source, quadrature.name, prediction, len(structures), per_structure=per_structure)
    import torch

    eps = float(torch.finfo(handle.dtype).eps)
    if e_err:
        e_err, e_std = np.array(e_err), np.array(e_std)
        floor = ROUND_OFF["energy"] * eps * float(np.sqrt(np.mean(np.square(e_scale))))
        report.qualities.append(SpreadQuality.measure("energy: rotational std", np.abs(e_err), e_std, e_err, e_std, floor))
        if len(own_u) == len(e_err):
            own = np.array(own_u)
            report.qualities.append(SpreadQuality.measure("energy: model's energy_uncertainty", np.abs(e_err), own, e_err, own))
    if f_err:
        errors, spreads = np.concatenate(f_err), np.concatenate(f_std)
        floor = ROUND_OFF["forces"] * eps * float(np.sqrt(np.mean(np.square(np.concatenate(f_scale)))))
        report.qualities.append(SpreadQuality.measure(
            "forces per atom: rotational std", np.linalg.norm(errors, axis=1), np.linalg.norm(spreads, axis=1), errors, spreads,
            floor, magnitude=np.linalg.norm(np.concatenate(f_scale), axis=1),
        ))
        rms_error = np.array([np.sqrt(np.mean(e**2)) for e in f_err])
        rms_spread = np.array([np.sqrt(np.mean(s**2)) for s in f_std])
        rms_force = np.array([np.sqrt(np.mean(f**2)) for f in f_scale])
        report.qualities.append(SpreadQuality.measure(
            "forces per structure (RMS)", rms_error, rms_spread, rms_error, rms_spread, floor, magnitude=rms_force
        ))
    return report


def plot_calibration(report: UncertaintyReport, path: str) -> None:
    """Observed against nominal coverage for each spread (diagonal: calibrated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for quality in report.qualities:
        nominal, observed = quality.calibration
        ax.plot(nominal, observed, marker="o", ms=3, label=quality.quantity)
    ax.set_xlabel("nominal Gaussian coverage")
    ax.set_ylabel("observed fraction of errors within")
    ax.set_title(f"{report.prediction} errors vs spread ({report.quadrature})", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
