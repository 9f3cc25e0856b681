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

from ase_symdiag.errors import UsageError

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
