"""Adaptive averaging: the cheapest quadrature whose leftover breaking is tolerable.

A quadrature Q removes a symmetry-breaking channel (lambda, sigma) from the average
when ``sum_k w_k D^{lambda,sigma}(R_k) = 0``. What it cannot remove, the channels it
does not kill plus the unresolved tail above the measured lambda_max, bounds the
error of the averaged prediction (``|sum_k w_k g(R_k)| <= sqrt(power)`` per channel
for positive weights). From a measured spectrum we pick the quadrature with the
fewest operations whose bound on the RMS force error is below the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ase_symdiag.o3.quadrature import O3Quadrature, identity_quadrature, lebedev_quadrature, smallest_exact_quadrature
from ase_symdiag.metrics.spectrum import StructureSpectrum
from ase_symdiag.o3.irreps import removed_channels

#: metatomic-ase's SymmetrizedCalculator default (l_max = 3, 84 operations)
DEFAULT_LMAX = 3


def killed_channels(quadrature: O3Quadrature, lmax: int) -> set:
    """Channels (l <= lmax, sigma) that ``quadrature`` averages to exactly zero."""
    return removed_channels(quadrature.rotations, quadrature.weights, lmax)


def residual_power(spectrum_output, quadrature: O3Quadrature, lmax: int) -> float:
    """Breaking power left in the average over ``quadrature`` (upper bound)."""
    killed = killed_channels(quadrature, lmax)
    left = sum(p for c, p in spectrum_output.breaking.items() if c not in killed)
    return left + spectrum_output.unresolved


def candidate_quadratures(lmax: int) -> List[O3Quadrature]:
    """No averaging, inversion only, then the smallest quadrature exact to each degree."""
    out = [identity_quadrature()]
    seen = {"C1"}
    for degree in range(0, lmax + 1):
        q = smallest_exact_quadrature(degree)
        if q.name not in seen:
            out.append(q)
            seen.add(q.name)
    return sorted(out, key=lambda q: q.size)


@dataclass
class QuadratureChoice:
    """The chosen quadrature and the evidence for it."""

    quadrature: O3Quadrature
    tolerance: float  # eV/Å, on the RMS force component
    residual: float  # eV/Å, worst structure, bound on the RMS force error left
    default_size: int
    reason: str
    candidates: List[dict] = field(default_factory=list)

    @property
    def saving(self) -> float:
        """Default evaluations / chosen evaluations."""
        return self.default_size / self.quadrature.size

    def to_dict(self) -> dict:
        return {
            "quadrature": self.quadrature.name,
            "operations": self.quadrature.size,
            "degree": self.quadrature.degree,
            "tolerance_eV_per_A": self.tolerance,
            "residual_eV_per_A": self.residual,
            "default_operations": self.default_size,
            "saving": self.saving,
            "reason": self.reason,
            "candidates": self.candidates,
        }


def choose_quadrature(
    spectra: List[StructureSpectrum],
    tolerance: Optional[float] = None,
    *,
    relative_tolerance: float = 0.01,
    output: str = "forces",
) -> QuadratureChoice:
    """Smallest quadrature whose leftover RMS force breaking meets the tolerance.

    With ``tolerance`` (eV/Å) every structure's residual ``sqrt(residual power / 3)``
    (power is per atom, summed over x, y, z) must be below it. Without it, each
    structure's residual must be below ``relative_tolerance`` times its own RMS force
    component (default 1 %); ``QuadratureChoice.tolerance`` then reports the
    tightest absolute value this implies.
    """
    if not spectra:
        raise ValueError("no spectra given")
    lmax = min(s.lmax for s in spectra)
    outputs = [s.outputs[output] for s in spectra if output in s.outputs]
    if not outputs:
        raise ValueError(f"no '{output}' in the spectra")
    rms = np.array([np.sqrt(o.mean_square / 3.0) for o in outputs])
    limits = np.full(len(outputs), tolerance) if tolerance is not None else relative_tolerance * rms
    default_size = lebedev_quadrature(DEFAULT_LMAX).size
    rows = []
    chosen = None
    for q in candidate_quadratures(lmax):
        residuals = np.array([np.sqrt(residual_power(o, q, lmax) / 3.0) for o in outputs])
        rows.append(
            {
                "quadrature": q.name,
                "operations": q.size,
                "degree": q.degree,
                "residual_eV_per_A": float(residuals.max()),
                "worst_ratio_to_tolerance": float(np.max(residuals / limits)),
            }
        )
        if chosen is None and np.all(residuals <= limits):
            chosen = (q, float(residuals.max()))
    what = (
        f"{tolerance:.3g} eV/A" if tolerance is not None
        else f"{relative_tolerance:.2%} of each structure's RMS force (tightest {limits.min():.3g} eV/A)"
    )
    if chosen is None:
        q = max(candidate_quadratures(lmax), key=lambda q: q.size)
        residual = rows[-1]["residual_eV_per_A"]
        reason = (
            f"no quadrature up to degree {lmax} reaches {what}: the breaking above "
            f"lambda={lmax} leaves {residual:.3g} eV/A; measure the spectrum with a larger "
            f"--lmax. Using the largest, '{q.name}' ({q.size} operations)"
        )
        return QuadratureChoice(q, float(limits.min()), residual, default_size, reason, rows)
    q, residual = chosen
    reason = (
        f"'{q.name}' ({q.size} operations, exact to degree {q.degree}) leaves at most "
        f"{residual:.3g} eV/A of RMS force breaking, within {what}; "
        f"metatomic-ase's default (l_max={DEFAULT_LMAX}) uses {default_size}"
    )
    return QuadratureChoice(q, float(limits.min()), residual, default_size, reason, rows)
