"""The MD run itself: the same start integrated with every variant, with checkpoints.

See :mod:`ase_symdiag.md` for what is recorded, when a variant fails and which files
are written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.md import MolecularDynamics

import ase_symdiag.md.io as io
from ase_symdiag.errors import NonFiniteOutputError, StructureError
from ase_symdiag.md.common import check_run_arguments, failure_record, initial_velocities, records_from_rows
from ase_symdiag.md.constraints import describe as describe_constraints
from ase_symdiag.md.errors import MDError, step_error
from ase_symdiag.md.observables import failure_reason, record, summarize
from ase_symdiag.md.plot import plot_md, summary_table
from ase_symdiag.md.variants import VariantSpec, resolve_variants

#: ``callback(variant name, step, atoms)``, called after every MD step
StepCallback = Callable[[str, int, Atoms], None]

#: failure reason when the calculator refuses its own NaN or infinite outputs
NON_FINITE = "non-finite forces or energy from the model"


@dataclass
class VariantResult:
    """Records (one array per :data:`~ase_symdiag.md.observables.COLUMNS` entry, one
    value per record) and summary of one variant, and the files written for it."""

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


def _make_dynamics(atoms: Atoms, options: Dict[str, Any], rng: np.random.Generator) -> MolecularDynamics:
    """Velocity Verlet (NVE), Langevin or Bussi (NVT) with ``options``' timestep (fs),
    temperature (K), friction (1/fs) and time constant (fs)."""
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


def run_settings(options: Dict[str, Any], start: Atoms, calc: Calculator, description: str) -> Dict[str, Any]:
    """What makes two runs of a variant the same run (stored in its checkpoint; a
    resume with other settings is refused): the model and variant, the starting
    structure, velocities and ASE constraints, and the integrator and thermostat settings."""
    settings = {
        "model": io.calculator_fingerprint(calc),
        "variant": description,
        "structure": io.atoms_fingerprint(start),
        "constraints": describe_constraints(start),
        "ensemble": options["ensemble"],
        "timestep": options["timestep"],
        "temperature": options["temperature"],
        "initial_temperature": options["initial_temperature"],
        "seed": options["seed"],
        "interval": options["interval"],
    }
    if options["ensemble"] == "nvt":
        settings["thermostat"] = options["thermostat"]
        settings["friction" if options["thermostat"] == "langevin" else "taut"] = (
            options["friction"] if options["thermostat"] == "langevin" else options["taut"]
        )
    return settings


def _check_resumable(out: str, resolved: Dict[str, Any], settings: Dict[str, Dict[str, Any]]) -> None:
    """Refuse (one line) to resume a variant whose checkpoint was written with other settings."""
    for name in resolved:
        path = io.variant_paths(out, name)["state"]
        if not os.path.exists(path):
            continue
        stored = io.read_checkpoint(path).get("settings")
        if stored is None:  # written before settings were stored: nothing to compare
            continue
        # a checkpoint from before constraints were stored had none honoured on resume
        stored.setdefault("constraints", [])
        changed = [
            f"{key} {stored.get(key)!r} -> {value!r}" if key not in ("model", "structure") else key
            for key, value in settings[name].items()
            if stored.get(key) != value
        ]
        if changed:
            raise MDError(
                f"--resume: variant '{name}' in '{out}' was run with other settings (changed: "
                f"{', '.join(changed)}); use another --out, or the same settings"
            )


def _run_variant(name: str, calc: Calculator, description: str, start_atoms: Atoms, options: Dict[str, Any],
                 out: Optional[str], resume: bool, progress: bool, callback: Optional[StepCallback],
                 settings: Optional[Dict[str, Any]] = None) -> VariantResult:
    """Integrate one variant from ``start_atoms`` (or from its checkpoint in ``out``)."""
    from ase.io.trajectory import Trajectory

    paths = io.variant_paths(out, name) if out else {}
    n_atoms = len(start_atoms)
    rows: List[Dict[str, float]] = []
    failure: Optional[Dict[str, Any]] = None
    start_step = 0
    atoms = start_atoms.copy()
    rng = np.random.default_rng(options["seed"] + 1)
    transferred = 0.0
    state = None
    if out and resume and os.path.exists(paths["state"]):
        state = io.read_checkpoint(paths["state"])
        atoms = io.atoms_from_state(state["atoms"])
        start_step = int(state["step"])
        failure = state.get("failure")
        transferred = float(state.get("transferred_energy", 0.0))
        if state.get("rng") is not None:
            rng.bit_generator.state = state["rng"]
        rows = io.read_log(paths["log"])[: int(state["log_rows"])]
        io.check_log_rows(paths["log"], len(rows), int(state["log_rows"]))
        io.write_log(paths["log"], rows)
        io.truncate_trajectory(paths["trajectory"], int(state["frames"]))
    elif out:
        io.remove_outputs(paths)

    atoms.calc = calc
    dynamics = _make_dynamics(atoms, options, rng) if failure is None and start_step < options["steps"] else None
    if dynamics is not None and hasattr(dynamics, "transferred_energy"):
        dynamics.transferred_energy = transferred
    thresholds = dict(min_distance=options["min_distance"], max_force=options["max_force"],
                      max_energy_jump=options["max_energy_jump"], check_energy_jump=options["ensemble"] == "nve")
    dt_fs = options["timestep"]

    def save_state(step: int, frames: int, finished: bool = False) -> None:
        if not out:
            return
        io.write_checkpoint(
            paths["state"], name=name, step=step, log_rows=len(rows), frames=frames, finished=finished,
            failure=failure, rng=rng, atoms=atoms, settings=settings,
            transferred_energy=getattr(dynamics, "transferred_energy", 0.0) if dynamics is not None else transferred,
        )

    if dynamics is not None:
        trajectory = Trajectory(paths["trajectory"], "a") if out else None
        log = open(paths["log"], "a") if out else None
        if log is not None and os.path.getsize(paths["log"]) == 0:
            log.write(io.log_header())
        frames = int(state["frames"]) if state else 0

        def emit(row: Dict[str, float]) -> None:
            nonlocal frames
            rows.append(row)
            if log is not None:
                log.write(io.log_line(row))
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
            except NonFiniteOutputError:
                forces = None
                failure = failure_record(start_step, dt_fs, NON_FINITE)
            except Exception as error:  # noqa: BLE001 - a bug or a model that raises is an error
                raise step_error(name, start_step, error) from error
            if failure is None and start_step == 0:
                row = record(atoms, 0, dt_fs, forces, 0.0, options["distance_cutoff"])
                reason = failure_reason(row, None, n_atoms, forces, **thresholds)
                emit(row)
                if reason:
                    failure = failure_record(0, dt_fs, reason)
                save_state(0, frames)
            step = start_step
            while failure is None and step < options["steps"]:
                try:
                    forces = dynamics.step(forces)
                except NonFiniteOutputError:
                    failure = failure_record(step + 1, dt_fs, NON_FINITE)
                    break
                except StructureError as error:  # the integrated positions (coincident, non-finite)
                    failure = failure_record(step + 1, dt_fs, f"the calculator refused the structure: {error}")
                    break
                except Exception as error:  # noqa: BLE001 - a bug or a model that raises is an error
                    raise step_error(name, step + 1, error) from error
                step += 1
                dynamics.nsteps += 1
                if bar is not None:
                    bar.update(1)
                if not np.all(np.isfinite(forces)):
                    failure = failure_record(step, dt_fs, "non-finite forces")
                elif step % options["interval"] == 0 or step == options["steps"]:
                    row = record(atoms, step, dt_fs, forces, getattr(dynamics, "transferred_energy", 0.0),
                                 options["distance_cutoff"])
                    reason = failure_reason(row, rows[-1] if rows else None, n_atoms, forces, **thresholds)
                    emit(row)
                    if reason:
                        failure = failure_record(step, dt_fs, reason)
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
    records = records_from_rows(rows)
    return VariantResult(name=name, records=records, summary=summary, files=paths)


def run_md(
    model_or_calculators: Any,
    atoms: Atoms,
    variants: VariantSpec = ("raw", "symmetrized"),
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
    symmetrize: Any = 3,
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
    callback: Optional[StepCallback] = None,
) -> MDResult:
    """Run the same MD with several variants of a model; see :mod:`ase_symdiag.md`.

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
    ``distance_cutoff`` (Å): search radius of the minimum distance.
    ``callback(name, step, atoms)`` is called after every step (tests use it to
    interrupt a run).
    """
    ensemble, thermostat = check_run_arguments(
        ensemble, thermostat, steps=steps, interval=interval, checkpoint_every=checkpoint_every, timestep=timestep,
        resume=resume, out=out,
    )
    if ensemble == "nvt" and (temperature is None or temperature <= 0):
        raise MDError("NVT needs a positive temperature")
    if len(atoms) == 0:
        raise MDError("no atoms")

    resolved = resolve_variants(
        model_or_calculators, atoms, variants, device=device, dtype=dtype, symmetrize=symmetrize, batch_size=batch_size,
    )
    if resume and not any(os.path.exists(io.variant_paths(out, name)["state"]) for name in resolved):
        raise MDError(f"--resume: nothing to resume in '{out}' (no checkpoint of {', '.join(resolved)})")
    with io.run_lock(out):  # one run at a time in an output directory
        if initial_temperature is None:
            initial_temperature = temperature
        start = initial_velocities(atoms, initial_temperature, seed)
        options = dict(
            ensemble=ensemble, steps=int(steps), timestep=float(timestep), temperature=temperature,
            thermostat=thermostat, friction=float(friction), taut=float(taut), interval=int(interval),
            checkpoint_every=int(checkpoint_every), seed=int(seed), min_distance=float(min_distance),
            max_force=float(max_force), max_energy_jump=max_energy_jump, distance_cutoff=float(distance_cutoff),
        )
        variant_settings = {
            name: run_settings(dict(options, initial_temperature=initial_temperature), start, calc, description)
            for name, (calc, description) in resolved.items()
        }
        if resume:
            _check_resumable(out, resolved, variant_settings)
        results: Dict[str, VariantResult] = {}
        for name, (calc, description) in resolved.items():
            results[name] = _run_variant(name, calc, description, start, options, out, resume, progress, callback,
                                         variant_settings[name])
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
