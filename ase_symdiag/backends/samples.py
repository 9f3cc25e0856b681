"""The sample format every backend returns: outputs of one structure under K operations.

Backends (the batched metatomic evaluation, the general ASE-calculator path) fill a
:class:`Predictions` in the *rotated* frame; every metric in :mod:`ase_symdiag.metrics`
is computed from it, once, whatever the backend. :func:`check_finite` is the single
place where a non-finite model output becomes an error instead of a number that every
comparison (``nan > limit`` is false) would let through.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from ase_symdiag.errors import NonFiniteOutputError


@dataclass
class Predictions:
    """Outputs for one structure under ``K`` operations (rotated frame, float64).

    ``energy`` (K,) eV; ``forces`` (K, N, 3) eV/Å; ``stress`` (K, 3, 3) eV/Å^3;
    ``energies`` (K, N) per-atom energies, eV; ``direct_forces``/``direct_stress``
    from the model's non-conservative heads; ``features`` maps per-atom feature
    outputs to (K, N, d) arrays; ``energy_uncertainty`` (K,) the model's
    ``energy_uncertainty`` output (eV). Absent outputs are ``None``.
    """

    energy: np.ndarray
    forces: Optional[np.ndarray] = None
    stress: Optional[np.ndarray] = None
    energies: Optional[np.ndarray] = None
    direct_forces: Optional[np.ndarray] = None
    direct_stress: Optional[np.ndarray] = None
    features: Optional[Dict[str, np.ndarray]] = None
    energy_uncertainty: Optional[np.ndarray] = None


def _first_bad(name: str, values: np.ndarray) -> Optional[str]:
    """A description of the non-finite entries of ``values`` (K, ...), or None."""
    values = np.asarray(values)
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    operations = np.nonzero(bad.reshape(len(values), -1).any(axis=1))[0] if values.ndim else np.array([0])
    kind = "NaN" if np.isnan(values[bad]).any() else "infinite"
    where = f"{name} ({kind}; evaluation(s) {operations[:5].tolist()}"
    if values.ndim >= 2 and (name in ("forces", "direct_forces", "energies") or name.startswith("feature")):
        atoms = np.nonzero(bad.reshape(values.shape[0], values.shape[1], -1).any(axis=(0, 2)))[0]
        where += f", atoms {atoms[:5].tolist()}"
    return where + ")"


def check_finite(predictions: Predictions, *, label: str, source: str) -> Predictions:
    """Return ``predictions`` unchanged if every output is finite.

    Raises :class:`~ase_symdiag.errors.NonFiniteOutputError` (a
    :class:`~ase_symdiag.errors.ModelEvaluationError`) naming the model ``source``, the structure
    ``label``, the outputs, the evaluations (index into the operations evaluated) and
    the atoms with NaN or infinite values otherwise.
    """
    problems = []
    for field in fields(predictions):
        value = getattr(predictions, field.name)
        if value is None:
            continue
        items = value.items() if isinstance(value, dict) else [(field.name, value)]
        for name, array in items:
            if array is None:
                continue
            found = _first_bad(name if field.name != "features" else f"feature {name}", array)
            if found:
                problems.append(found)
    if problems:
        raise NonFiniteOutputError(
            f"model '{source}' returned non-finite values for {label or 'structure'}: "
            + "; ".join(problems)
        )
    return predictions


def join_chunks(chunks: Iterable[Tuple[int, int, Dict[str, np.ndarray]]]) -> Dict[str, np.ndarray]:
    """``{name: array}`` of every ``(start, stop, {name: array})`` chunk a backend yields,
    joined along the operations axis in the order they come."""
    parts: Dict[str, list] = {}
    for _, _, chunk in chunks:
        for name, value in chunk.items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


__all__ = ["Predictions", "check_finite", "join_chunks"]
