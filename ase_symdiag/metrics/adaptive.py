"""Adaptive averaging: the cheapest quadrature whose leftover breaking is tolerable.

What is measured. Averaging the model over a quadrature {(R_k, w_k)} turns the
back-rotated output ``g(R) = rho(R)^-1 y(Rx)`` into ``g_bar(R) = sum_k w_k g(R_k R)``;
in channel (lambda, sigma) its coefficients are ``A^T P`` with
``A = sum_k w_k D^{lambda,sigma}(R_k)`` (zero when the quadrature removes the channel;
for a group, a projector). The *leftover breaking* of an output is the O(3) variance
of ``g_bar``, i.e. the mean square over orientations R of ``g_bar(R) - <g_bar>``:

- for the channels ``lambda <= lmax`` resolved by the spectrum it is computed exactly,
  ``sum (2 lambda + 1) |A^T P|^2`` (:meth:`OutputSpectrum.averaged_power`);
- the breaking the spectrum did not attribute to those channels (``unresolved``,
  measured at Haar-random check orientations) is counted in full, plus two standard
  errors: no quadrature is credited with removing what was not measured (for
  positive weights ``|A| <= 1``, so this is an upper bound of its share).

The square root is an **RMS over orientations**, not a maximum: in some orientations
the averaged prediction deviates by more (tested against random orientations of the
averaged model). Units, one per output (the same definitions as ``check``):

- energy: RMS over orientations of the energy per atom, meV/atom;
- forces (and direct forces): RMS over orientations, atoms and x, y, z (per
  component; the spectrum's per-atom power summed over x, y, z divided by 3), eV/Å;
- stress (and direct stress; periodic structures only): RMS over orientations of the
  Frobenius norm of the 3x3 stress, GPa.

Every output the user relies on must meet its tolerance: forces by default
``relative_tolerance`` (1 %) of each structure's RMS force component, floored at
:data:`~ase_symdiag.metrics.floors.RELATIVE_FORCE_FLOOR` (1 meV/Å, the floor of
``check``'s relative force error: a perfect crystal's round-off forces, ~1e-15 eV/Å,
would otherwise make the tolerance round-off too), energy
``DEFAULT_ENERGY_TOLERANCE`` (0.1 meV/atom), stress ``DEFAULT_STRESS_TOLERANCE``
(0.01 GPa). If no candidate exact up to ``lmax`` meets them (breaking above ``lmax``
that cannot be attributed to measured channels), the choice says so and claims
nothing (``met = False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ase_symdiag.errors import UsageError
from ase_symdiag.metrics.floors import RELATIVE_FORCE_FLOOR
from ase_symdiag.metrics.spectrum import OutputSpectrum, StructureSpectrum
from ase_symdiag.o3.quadrature import O3Quadrature, identity_quadrature, lebedev_quadrature, smallest_exact_quadrature
from ase_symdiag.o3.transforms import GPA

#: metatomic-ase's SymmetrizedCalculator default (l_max = 3, 84 operations)
DEFAULT_LMAX = 3
#: default tolerance on the energy per atom, meV/atom (RMS over orientations)
DEFAULT_ENERGY_TOLERANCE = 0.1
#: default tolerance on the stress, GPa (RMS over orientations of the Frobenius norm)
DEFAULT_STRESS_TOLERANCE = 0.01
#: the outputs checked by default
DEFAULT_OUTPUTS = ("energy", "forces", "stress")


@dataclass(frozen=True)
class _Rule:
    """How one output's breaking power becomes an amplitude the user reads."""

    key: str  # JSON key stem
    unit: str
    quantity: str
    amplitude: Callable[[float, int], float]  # (power, n_atoms) -> amplitude


_FORCE = _Rule(
    "force_rms_per_component_eV_per_A", "eV/A",
    "RMS over orientations, atoms and x, y, z (per component)",
    lambda power, n: float(np.sqrt(max(power, 0.0) / 3.0)),
)
_STRESS = _Rule(
    "stress_rms_frobenius_GPa", "GPa", "RMS over orientations of the Frobenius norm",
    lambda power, n: float(np.sqrt(max(power, 0.0))) / GPA,
)
RULES: Dict[str, _Rule] = {
    "energy": _Rule(
        "energy_rms_meV_per_atom", "meV/atom", "RMS over orientations of the energy per atom",
        lambda power, n: 1e3 * float(np.sqrt(max(power, 0.0))) / n,
    ),
    "forces": _FORCE,
    "direct_forces": _Rule("direct_" + _FORCE.key, _FORCE.unit, _FORCE.quantity, _FORCE.amplitude),
    "stress": _STRESS,
    "direct_stress": _Rule("direct_" + _STRESS.key, _STRESS.unit, _STRESS.quantity, _STRESS.amplitude),
}


def residual_power(spectrum_output: OutputSpectrum, quadrature: O3Quadrature) -> float:
    """Leftover breaking power of the average over ``quadrature`` (module docstring).

    The O(3) variance of the averaged output: exact for the resolved channels, plus
    the unresolved part and two standard errors counted in full. The units are the
    spectrum's powers.
    """
    return spectrum_output.averaged_power(quadrature) + spectrum_output.unresolved_bound


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
class OutputVerdict:
    """One output's tolerance and what the chosen quadrature leaves of it (worst structure)."""

    output: str
    unit: str
    quantity: str
    key: str
    tolerance: float  # tightest over structures, ``unit``
    tolerance_text: str
    residual: float  # worst structure at the chosen quadrature, ``unit``, RMS over orientations
    unresolved: float  # worst structure's part above lmax (+2 standard errors), ``unit``
    ratio: float  # worst residual / tolerance over structures
    cheapest: Optional[str]  # the cheapest candidate meeting this output's tolerance alone

    @property
    def met(self) -> bool:
        return self.ratio <= 1.0

    def to_dict(self) -> dict:
        return {
            "quantity": self.quantity,
            "unit": self.unit,
            "tolerance": self.tolerance,
            "tolerance_definition": self.tolerance_text,
            "residual": self.residual,
            "unresolved": self.unresolved,
            "ratio_to_tolerance": self.ratio,
            "met": self.met,
            "cheapest_alone": self.cheapest,
        }


@dataclass
class QuadratureChoice:
    """The chosen quadrature and the evidence for it (``met``: every tolerance is met)."""

    quadrature: O3Quadrature
    met: bool
    outputs: Dict[str, OutputVerdict]
    decided_by: List[str]
    lmax: int
    default_size: int
    reason: str
    candidates: List[dict] = field(default_factory=list)

    @property
    def saving(self) -> float:
        """Default evaluations / chosen evaluations."""
        return self.default_size / self.quadrature.size

    @property
    def status(self) -> str:
        return "met" if self.met else "not met (refused)"

    def to_dict(self) -> dict:
        data = {
            "quadrature": self.quadrature.name,
            "operations": self.quadrature.size,
            "degree": self.quadrature.degree,
            "tolerance_met": self.met,
            "status": self.status,
            "decided_by": self.decided_by,
            "lmax": self.lmax,
            "residual_definition": (
                "RMS over orientations of the averaged prediction's back-rotated output minus its O(3) "
                "mean (sqrt of its O(3) variance), worst structure; channels <= lmax exact, the "
                "unresolved part above lmax counted in full (+2 standard errors); not a maximum"
            ),
        }
        for name, verdict in self.outputs.items():
            data[f"tolerance_{verdict.key}"] = verdict.tolerance
            data[f"residual_{verdict.key}"] = verdict.residual
        data.update(
            {
                "outputs": {name: v.to_dict() for name, v in self.outputs.items()},
                "default_operations": self.default_size,
                "saving": self.saving,
                "reason": self.reason,
                "candidates": self.candidates,
            }
        )
        return data


def _amplitude_text(verdicts: Sequence[OutputVerdict], values: Dict[str, float]) -> str:
    return ", ".join(f"{v.output} {values[v.output]:.3g} {v.unit}" for v in verdicts)


def choose_quadrature(
    spectra: List[StructureSpectrum],
    tolerance: Optional[float] = None,
    *,
    relative_tolerance: float = 0.01,
    energy_tolerance: float = DEFAULT_ENERGY_TOLERANCE,
    stress_tolerance: float = DEFAULT_STRESS_TOLERANCE,
    outputs: Sequence[str] = DEFAULT_OUTPUTS,
) -> QuadratureChoice:
    """Smallest candidate quadrature whose leftover breaking meets every output's tolerance.

    ``tolerance``: forces (and direct forces), eV/Å, RMS per component; without it each
    structure's limit is ``relative_tolerance`` times the larger of its own RMS force
    component and ``RELATIVE_FORCE_FLOOR`` (1 meV/Å, as ``check``'s relative error).
    ``energy_tolerance``: meV/atom. ``stress_tolerance``: GPa (Frobenius). ``outputs``:
    those checked (an output absent from a structure, e.g. stress of a molecule, is
    skipped there). Residuals and their units: module docstring.
    """
    if not spectra:
        raise UsageError("no spectra given")
    lmax = min(s.lmax for s in spectra)
    checked = [name for name in outputs if any(name in s.outputs for s in spectra)]
    if "forces" not in checked and "energy" not in checked:
        raise UsageError(f"none of {list(outputs)} in the spectra")
    unknown = [name for name in checked if name not in RULES]
    if unknown:
        raise UsageError(f"no tolerance rule for {unknown}; known: {sorted(RULES)}")
    # (output, structure index, spectrum, limit)
    entries = []
    texts = {}
    for name in checked:
        rule = RULES[name]
        for index, s in enumerate(spectra):
            if name not in s.outputs:
                continue
            out = s.outputs[name]
            if name in ("forces", "direct_forces"):
                limit = tolerance if tolerance is not None else relative_tolerance * max(
                    rule.amplitude(out.mean_square, s.n_atoms), RELATIVE_FORCE_FLOOR
                )
            elif name == "energy":
                limit = energy_tolerance
            else:
                limit = stress_tolerance
            entries.append((name, index, s, out, float(limit)))
        if name in ("forces", "direct_forces"):
            texts[name] = (
                f"{tolerance:.3g} eV/A" if tolerance is not None
                else f"{relative_tolerance:.2%} of each structure's RMS force component "
                f"(at least {RELATIVE_FORCE_FLOOR * 1000:g} meV/A)"
            )
        else:
            texts[name] = f"{energy_tolerance if name == 'energy' else stress_tolerance:.3g} {rule.unit}"

    default_size = lebedev_quadrature(DEFAULT_LMAX).size
    candidates = candidate_quadratures(lmax)
    rows, table = [], []  # table[c][name] = (worst residual, worst ratio, worst unresolved)
    for q in candidates:
        per_output: Dict[str, List[float]] = {}
        for name, index, s, out, limit in entries:
            rule = RULES[name]
            residual = rule.amplitude(residual_power(out, q), s.n_atoms)
            unresolved = rule.amplitude(out.unresolved_bound, s.n_atoms)
            ratio = residual / limit if limit > 0 else (0.0 if residual == 0 else float("inf"))
            worst = per_output.setdefault(name, [0.0, 0.0, 0.0])
            per_output[name] = [max(worst[0], residual), max(worst[1], ratio), max(worst[2], unresolved)]
        table.append(per_output)
        row = {"quadrature": q.name, "operations": q.size, "degree": q.degree}
        for name in checked:
            row[f"residual_{RULES[name].key}"] = per_output[name][0]
        row["worst_ratio_to_tolerance"] = max(v[1] for v in per_output.values())
        row["decisive_output"] = max(per_output, key=lambda n: per_output[n][1])
        rows.append(row)

    passing = [i for i, per_output in enumerate(table) if all(v[1] <= 1.0 for v in per_output.values())]
    met = bool(passing)
    chosen = passing[0] if met else len(candidates) - 1
    q = candidates[chosen]
    verdicts = {}
    for name in checked:
        cheapest = next((candidates[i].name for i, t in enumerate(table) if t[name][1] <= 1.0), None)
        residual, ratio, unresolved = table[chosen][name]
        limit = min(limit for n, _, _, _, limit in entries if n == name)
        rule = RULES[name]
        verdicts[name] = OutputVerdict(
            name, rule.unit, rule.quantity, rule.key, limit, texts[name], residual, unresolved, ratio, cheapest
        )
    sizes = {c.name: c.size for c in candidates}
    needs = {name: sizes[v.cheapest] for name, v in verdicts.items() if v.cheapest is not None}
    if met:
        top = max(needs.values())
        decided_by = [name for name, size in needs.items() if size == top and size > 1]
    else:
        decided_by = [name for name, v in verdicts.items() if not v.met]

    values = {name: v.residual for name, v in verdicts.items()}
    residual_text = _amplitude_text(list(verdicts.values()), values)
    unresolved_parts = [v for v in verdicts.values() if v.unresolved > 1e-3 * max(v.tolerance, 1e-300)]
    if met:
        why = f"decided by {', '.join(decided_by)}" if decided_by else "no output needs averaging"
        of_which = (
            f"; of which above lambda={lmax} (unresolved, counted in full): "
            + _amplitude_text(unresolved_parts, {v.output: v.unresolved for v in unresolved_parts})
            if unresolved_parts else ""
        )
        reason = (
            f"'{q.name}' ({q.size} operations, exact to degree {q.degree}) leaves an RMS over orientations "
            f"of the averaged prediction's breaking (worst structure; not a maximum) of {residual_text}"
            f"{of_which}; within every tolerance ({why}); "
            f"metatomic-ase's default (l_max={DEFAULT_LMAX}) uses {default_size}"
        )
    else:
        failing = [verdicts[name] for name in decided_by]
        reason = (
            f"tolerance NOT met, no claim made: even the largest measured candidate '{q.name}' ({q.size} "
            f"operations, exact to degree {q.degree}) leaves "
            + "; ".join(
                f"{v.output} {v.residual:.3g} {v.unit} > {v.tolerance:.3g} {v.unit}, of which {v.unresolved:.3g} "
                f"{v.unit} cannot be attributed to channels lambda <= {lmax} (unresolved, with 2 standard errors)"
                for v in failing
            )
            + " (RMS over orientations, worst structure); no quadrature is credited with removing breaking "
            f"that was not measured: rerun with a larger --lmax. '{q.name}' is used without a claim"
        )
    return QuadratureChoice(q, met, verdicts, decided_by, lmax, default_size, reason, rows)
