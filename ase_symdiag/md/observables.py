"""What an MD run records: per-record observables, failure checks and the summary.

Units: time in fs (ps in summaries), energies in eV (drift in meV/atom/ps),
temperature in K, pressure in GPa, distances in Å, forces in eV/Å, momentum in
amu Å/fs, angular momentum in amu Å^2/fs.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError

#: quantities recorded at each record, in this order (columns of NAME.log)
COLUMNS = (
    "step",
    "time_fs",
    "etot_eV",
    "epot_eV",
    "ekin_eV",
    "conserved_eV",
    "temperature_K",
    "momentum",
    "angular_momentum",
    "Lx",
    "Ly",
    "Lz",
    "pressure_GPa",
    "min_distance_A",
    "max_force_eV_A",
)


def minimum_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Smallest interatomic distance with periodic images, Å (inf if none below ``cutoff`` Å)."""
    if len(atoms) < 2 and not atoms.pbc.any():
        return math.inf
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, cutoff, self_interaction=False)
    return float(d.min()) if len(d) else math.inf


def angular_momentum(atoms: Atoms) -> np.ndarray:
    """Angular momentum about the centre of mass, shape (3,), amu Å^2/fs."""
    r = atoms.positions - atoms.get_center_of_mass()
    p = atoms.get_momenta()  # amu Å / ASE-time
    return np.cross(r, p).sum(axis=0) * units.fs


def pressure(atoms: Atoms) -> float:
    """Pressure including the ideal-gas term, GPa (NaN unless fully periodic with a stress)."""
    if not atoms.pbc.all():
        return math.nan
    try:
        stress = atoms.get_stress(include_ideal_gas=True)
    except (PropertyNotImplementedError, NotImplementedError):
        return math.nan
    return float(-np.mean(stress[:3]) / units.GPa)


def record(atoms: Atoms, step: int, dt_fs: float, forces: np.ndarray, transferred: float,
           cutoff: float) -> Dict[str, float]:
    """One row of :data:`COLUMNS` for ``atoms`` (with its calculator) at ``step``.

    ``forces``: shape (n_atoms, 3), eV/Å, as returned by the integrator;
    ``transferred``: energy the thermostat has exchanged, eV (0 in NVE and Langevin);
    ``cutoff``: search radius of the minimum distance, Å.
    """
    epot = float(atoms.get_potential_energy())
    ekin = float(atoms.get_kinetic_energy())
    L = angular_momentum(atoms) if not atoms.pbc.any() else np.full(3, math.nan)
    momentum = atoms.get_momenta().sum(axis=0) * units.fs
    norms = np.linalg.norm(forces, axis=1) if len(forces) else np.zeros(1)
    return {
        "step": step,
        "time_fs": step * dt_fs,
        "etot_eV": epot + ekin,
        "epot_eV": epot,
        "ekin_eV": ekin,
        "conserved_eV": epot + ekin - transferred,
        "temperature_K": float(atoms.get_temperature()),
        "momentum": float(np.linalg.norm(momentum)),
        "angular_momentum": float(np.linalg.norm(L)),
        "Lx": float(L[0]),
        "Ly": float(L[1]),
        "Lz": float(L[2]),
        "pressure_GPa": pressure(atoms),
        "min_distance_A": minimum_distance(atoms, cutoff),
        "max_force_eV_A": float(np.max(norms)) if np.all(np.isfinite(forces)) else math.inf,
    }


def failure_reason(row: Dict[str, float], previous: Optional[Dict[str, float]], n_atoms: int,
                   forces: np.ndarray, *, min_distance: float, max_force: float,
                   max_energy_jump: Optional[float], check_energy_jump: bool) -> Optional[str]:
    """Why the run must stop at ``row`` (None if it may go on).

    Thresholds: ``min_distance`` Å, ``max_force`` eV/Å and, when ``check_energy_jump``
    (NVE) and ``max_energy_jump`` is not None, a change of the total energy between
    ``previous`` and ``row`` above ``max_energy_jump`` eV/atom.
    """
    if not np.all(np.isfinite(forces)):
        return "non-finite forces"
    if not math.isfinite(row["epot_eV"]):
        return "non-finite energy"
    if row["max_force_eV_A"] > max_force:
        return f"force {row['max_force_eV_A']:.3g} eV/Å above {max_force:g} eV/Å"
    if row["min_distance_A"] < min_distance:
        return f"atoms {row['min_distance_A']:.3g} Å apart (threshold {min_distance:g} Å)"
    if check_energy_jump and previous is not None and max_energy_jump is not None:
        jump = abs(row["etot_eV"] - previous["etot_eV"]) / n_atoms
        if jump > max_energy_jump:
            return f"total energy jumped by {jump:.3g} eV/atom between records (threshold {max_energy_jump:g})"
    return None


def linear_slope(t: np.ndarray, y: np.ndarray) -> float:
    """Slope of the least-squares line through ``(t, y)`` (NaN with fewer than two distinct times)."""
    if len(t) < 2 or np.ptp(t) == 0:
        return math.nan
    return float(np.polyfit(t, y, 1)[0])


def summarize(name: str, rows: Sequence[Dict[str, float]], *, n_atoms: int, ensemble: str, description: str = "",
              failure: Optional[Dict[str, Any]] = None, steps_requested: Optional[int] = None,
              periodic: bool = False) -> Dict[str, Any]:
    """Summary numbers of one variant from its records.

    ``drift_meV_per_atom_per_ps``: slope of a least-squares line through the total
    energy (NVE) or the thermostat-corrected conserved energy (NVT with Bussi; NaN for
    Langevin, which does not track the energy it exchanges) against time, in
    meV/atom/ps. ``angular_momentum_drift``: norm of the fitted slope of the vector L(t)
    (amu Å^2/fs per ps, finite systems).
    """
    t_ps = np.array([r["time_fs"] for r in rows]) / 1000.0
    col = {c: np.array([r[c] for r in rows], dtype=float) for c in COLUMNS}
    summary: Dict[str, Any] = {
        "variant": name,
        "description": description,
        "ensemble": ensemble,
        "atoms": n_atoms,
        "records": len(rows),
        "steps_requested": steps_requested,
        "steps_done": int(rows[-1]["step"]) if rows else 0,
        "time_ps": float(t_ps[-1]) if rows else 0.0,
    }
    conserved = col["etot_eV"] if ensemble == "nve" else col["conserved_eV"]
    drift = linear_slope(t_ps, conserved) * 1000.0 / n_atoms if rows else math.nan
    if ensemble != "nve" and rows and np.allclose(col["conserved_eV"], col["etot_eV"]) and np.ptp(col["etot_eV"]) > 0:
        drift = math.nan  # Langevin: exchanged energy not tracked
    summary["drift_meV_per_atom_per_ps"] = drift
    if rows:
        summary["energy_fluctuation_meV_per_atom"] = float(np.std(conserved) * 1000.0 / n_atoms)
        summary["max_energy_deviation_meV_per_atom"] = float(np.max(np.abs(conserved - conserved[0])) * 1000.0 / n_atoms)
        summary["temperature_mean_K"] = float(np.mean(col["temperature_K"]))
        summary["temperature_std_K"] = float(np.std(col["temperature_K"]))
        summary["momentum_change"] = float(abs(col["momentum"][-1] - col["momentum"][0]))
        summary["min_distance_A"] = float(np.min(col["min_distance_A"]))
        summary["max_force_eV_A"] = float(np.max(col["max_force_eV_A"]))
        if not periodic:
            L = np.stack([col["Lx"], col["Ly"], col["Lz"]], axis=1)
            slopes = [linear_slope(t_ps, L[:, k]) for k in range(3)]
            summary["angular_momentum_drift"] = float(np.linalg.norm(slopes))
            summary["angular_momentum_change"] = float(np.linalg.norm(L[-1] - L[0]))
            summary["pressure_mean_GPa"] = None
        else:
            summary["angular_momentum_drift"] = None
            summary["angular_momentum_change"] = None
            p = col["pressure_GPa"]
            summary["pressure_mean_GPa"] = float(np.nanmean(p)) if np.any(np.isfinite(p)) else None
    failure = failure or {}
    summary["failure_time_ps"] = failure.get("time_ps")
    summary["failure_step"] = failure.get("step")
    summary["failure_reason"] = failure.get("reason")
    return summary
