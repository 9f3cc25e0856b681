"""The rotational spread of a model as an uncertainty (docs/methods.md §9): evaluate
(symmetrized and raw), then score the spread against reference errors with the pure
:mod:`ase_symdiag.metrics.uncertainty`."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ase_symdiag.backends.metatomic.evaluation import evaluate
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.drivers.symmetrize import symmetrized_prediction
from ase_symdiag.errors import StructureError, UsageError
from ase_symdiag.metrics.uncertainty import PREDICTIONS, ROUND_OFF, SpreadQuality, UncertaintyReport
from ase_symdiag.o3.quadrature import resolve_quadrature
from ase_symdiag.structures import Structure


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


__all__ = ["rotational_uncertainty"]
