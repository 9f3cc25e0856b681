"""Correction names, resolution of ``corrections=``, and the calculator hooks."""

from __future__ import annotations

from typing import Dict, List, Sequence, Type

import numpy as np

from ase_symdiag.corrections.base import Correction, Outputs, copy_outputs
from ase_symdiag.corrections.forces import NetForce, NetTorque
from ase_symdiag.corrections.mixed import MixedForces
from ase_symdiag.corrections.point_group import PointGroupAverage
from ase_symdiag.corrections.stochastic import StochasticRotation
from ase_symdiag.corrections.stress import SymmetricStress
from ase_symdiag.errors import UsageError
from ase_symdiag.structures import Structure

__all__ = ["NAMES", "apply_corrections", "correct_prediction", "prepare_evaluation", "resolve_corrections"]

#: names accepted by :func:`resolve_corrections` (``"stochastic:SEED"`` and
#: ``"mixed_forces:N"`` take an integer argument)
NAMES: Dict[str, Type[Correction]] = {
    "net_force": NetForce,
    "net_torque": NetTorque,
    "symmetric_stress": SymmetricStress,
    "point_group": PointGroupAverage,
    "stochastic": StochasticRotation,
    "mixed_forces": MixedForces,
}


def resolve_corrections(spec) -> List[Correction]:
    """Turn ``corrections=`` into a list of correction objects.

    ``None``/empty: no corrections. A string or a correction, or a sequence of them.
    Strings are names of :data:`NAMES`, optionally with an integer argument after a
    colon (``"stochastic:7"`` seeds the generator, ``"mixed_forces:5"``) or several
    names separated by commas (``"net_force,net_torque"``). At most one correction may
    declare ``rotations``. Raises :class:`~ase_symdiag.errors.UsageError` otherwise.
    """
    if spec is None:
        return []
    if isinstance(spec, str) or callable(spec):
        spec = [spec]
    out: List[Correction] = []
    for item in spec:
        if isinstance(item, str):
            for text in filter(None, (part.strip() for part in item.split(","))):
                out.append(_from_name(text))
        elif isinstance(item, type) and issubclass(item, Correction):
            out.append(item())
        elif callable(item):
            out.append(item)
        else:
            raise UsageError(f"a correction must be a name or a callable, got {item!r}")
    if sum(hasattr(c, "rotations") for c in out) > 1:
        raise UsageError("at most one correction may choose the rotations (e.g. one 'stochastic')")
    return out


def _from_name(text: str) -> Correction:
    """One correction from ``"name"`` or ``"name:INT"``."""
    name, _, argument = text.partition(":")
    if name not in NAMES:
        raise UsageError(f"unknown correction {text!r}: use one of {sorted(NAMES)}")
    if not argument:
        return NAMES[name]()
    if name not in ("stochastic", "mixed_forces") or not argument.lstrip("-").isdigit():
        raise UsageError(f"correction {text!r}: only 'stochastic:SEED' and 'mixed_forces:N' take an integer")
    return NAMES[name](int(argument))


def apply_corrections(corrections: Sequence, outputs: Outputs, structure: Structure, masses=None) -> Outputs:
    """Apply ``corrections`` (resolved first) in order to one structure's ``outputs``."""
    out = copy_outputs(outputs)
    for correction in resolve_corrections(corrections):
        out = correction(out, structure, masses)
    return out


def prepare_evaluation(corrections: Sequence, structure: Structure, quadrature, options: dict):
    """Calculator hook before evaluation: ``(quadrature or None, own, options)``.

    A correction with ``rotations`` turns the identity into its operations, or rotates
    an existing quadrature (operations ``Q_k R_j``, weights ``w_k v_j``); ``own`` is
    True when the operations come only from the correction (its spread is then not a
    rotational uncertainty). Corrections with ``evaluation_options`` may ask for more.
    """
    from ase_symdiag.o3.quadrature import O3Quadrature

    own = False
    for correction in corrections:
        if hasattr(correction, "evaluation_options"):
            options = correction.evaluation_options(dict(options), structure)
        if hasattr(correction, "rotations"):
            rotations, weights = correction.rotations(structure)
            rotations = np.asarray(rotations, dtype=np.float64)
            weights = np.asarray(weights, dtype=np.float64)
            name = getattr(correction, "name", "rotations")
            if quadrature is None:
                own = True
                include_inversion = bool(np.any(np.linalg.det(rotations) < 0))
                quadrature = O3Quadrature(rotations, weights / weights.sum(), -1, name, include_inversion)
            else:
                combined = np.einsum("kab,jbc->kjac", quadrature.rotations, rotations).reshape(-1, 3, 3)
                combined_weights = np.outer(quadrature.weights, weights / weights.sum()).reshape(-1)
                quadrature = O3Quadrature(
                    combined, combined_weights, quadrature.degree, f"{quadrature.name}*{name}",
                    quadrature.include_inversion,
                )
    return quadrature, own, options


def correct_prediction(
    corrections: Sequence, mean: dict, structure: Structure, masses, forces_key: str, stress_key: str
) -> dict:
    """Calculator hook after averaging: apply ``corrections`` to the averaged outputs.

    ``mean`` uses the evaluation's keys (``forces``/``direct_forces``, ...); the
    corrections see the outputs the calculator returns under ``forces``/``stress``
    (plus ``conservative_forces`` when direct forces are returned and conservative
    ones were computed). Returns a new dict with the same keys as ``mean``.
    """
    outputs: Outputs = {
        "energy": float(mean["energy"]),
        "forces": mean.get(forces_key),
        "stress": mean.get(stress_key),
        "energies": mean.get("energies"),
    }
    if forces_key != "forces" and "forces" in mean:
        outputs["conservative_forces"] = mean["forces"]
    for correction in corrections:
        outputs = correction(outputs, structure, masses)
    new = dict(mean)
    new["energy"] = outputs["energy"]
    for name, key in (("forces", forces_key), ("stress", stress_key), ("energies", "energies")):
        if key in mean and outputs.get(name) is not None:
            new[key] = outputs[name]
    return new
