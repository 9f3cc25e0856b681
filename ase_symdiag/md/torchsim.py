"""Batched MD stability runs on TorchSim: replicas x temperatures x variants.

:func:`run_md_batched` runs, for each *variant* of a model, ``replicas`` independent
trajectories at each of ``temperatures`` as ONE batched TorchSim state (one model call
per step for the whole batch, state kept on the model's device), and records for every
replica the observables of the ASE runner (:mod:`ase_symdiag.md.runner`: energies,
temperature, total and angular momentum, pressure, minimum distance, largest force,
same definitions, computed by the same functions) every ``interval`` steps. A replica
stops at its first failure (the criteria of the ASE runner, plus non-finite forces or
positions at any step) and leaves the batch; the others go on. An exception in a
model call is no failure but an error (:class:`MDError` naming the variant and step).

Structures: periodic, finite (a box ASE gave a molecule is dropped, :func:`torchsim_cell`)
or slabs (``pbc=[True, True, False]``). ASE ``FixAtoms`` and ``FixCom`` are honoured
through TorchSim's constraints; any other constraint is refused
(:mod:`ase_symdiag.md.constraints`). One run at a time holds ``out``.

Variants, each a TorchSim model
(:class:`~ase_symdiag.backends.metatomic.torchsim_model.BatchedMetatomicModel`, the
outputs of ``metatomic_torchsim.MetatomicModel`` batched, over a metatomic TorchScript
model, or a thin wrapper around one):

- ``raw``: the model itself (conservative forces);
- ``symmetrized``: :func:`ase_symdiag.backends.metatomic.export.export_symmetrized` at ``symmetrize``
  (default degree 3; ``"adaptive"`` picks the cheapest quadrature from the model's
  measured breaking spectrum, as ``ase-symdiag symmetrize`` does);
- ``corrected``: conservative forces with the net force, and for finite systems the
  net torque, removed (:class:`CorrectedModel`, batched; the same forces as
  :func:`ase_symdiag.backends.metatomic.corrected.export_corrected` run through metatomic-torchsim's
  ``non_conservative`` option, which ``build_variant(..., corrected_export=True)``
  uses; both tested against ``SymDiagCalculator(corrections=[...])``);
- ``stochastic``: :class:`StochasticRotationModel`, the raw model evaluated on a
  fresh Haar-random O(3) rotation of each replica at each step, outputs
  back-rotated.

Integrators (TorchSim's): NVE velocity Verlet; NVT Langevin (BAOAB,
``friction`` 1/fs); NVT Bussi (TorchSim's v-rescale, ``taut`` fs), whose exchanged
energy is tracked so that the conserved energy and its drift are defined as in the
ASE runner.

Initial velocities: Maxwell-Boltzmann at each replica's temperature, without net
momentum and rotation (:func:`ase_symdiag.md.common.initial_velocities`), from a seed that
depends on (``seed``, replica, temperature) only: every variant, in any run, starts
replica ``r`` at temperature ``T`` from the same velocities (paired comparison).

Files in ``out`` for each variant ``NAME``:

- ``NAME.log``: one line per record and replica (columns :data:`LOG_COLUMNS`),
  appended and flushed;
- ``NAME.state.json``: checkpoint every ``checkpoint_every`` steps (atomic write):
  positions, momenta, forces, energies of the replicas still running, cells, the
  energy each thermostat exchanged, the TorchSim and rotation random-generator
  states, the failures so far and how many log lines (and trajectory frames) belong
  to it. ``resume=True`` continues from it bit for bit (tested) and refuses to
  resume when the settings differ, naming them;
- ``NAME.json``: per-replica summaries (:func:`ase_symdiag.md.observables.summarize`);
- ``NAME.rK.traj`` with ``trajectories=True``: one ASE trajectory per replica K.

and ``summary.json`` (settings, per-replica summaries, the statistics of
:mod:`ase_symdiag.md.statistics`), ``survival.json`` and ``survival.png``.

Units as in :mod:`ase_symdiag.md.runner`; TorchSim's metal units are ASE's (amu, Å, eV,
time unit ``ase.units.fs`` per fs).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms, units

from ase_symdiag.md import constraints as md_constraints
from ase_symdiag.md.common import (
    check_run_arguments, check_variant_names, failure_record, initial_velocities,
)
from ase_symdiag.md.errors import MDError, step_error
from ase_symdiag.md.io import log_header, log_line, run_lock
from ase_symdiag.md.observables import COLUMNS, failure_reason, record
from ase_symdiag.md.replicas import (
    LOG_PREFIX,
    restore_checkpoint,
    BatchedMDResult,
    BatchedVariantResult,
    checkpoint_data,
    kinetic_energy,
    parse_temperatures,
    replica_paths,
    replica_results,
    seed_for,
    set_generator_state,
    voigt,
)
from ase_symdiag.md.torchsim_models import StochasticRotationModel, build_variant, require_torchsim

# --------------------------------------------------------------------------------------
# one variant, all replicas in one batch


def torchsim_cell(atoms: Atoms) -> np.ndarray:
    """``atoms``' cell (row vectors, Å) with the vectors along non-periodic directions
    zeroed, as metatomic-torchsim requires: a molecule centred by ASE
    (``pbc=False`` with a box) or a slab with vacuum (``pbc=[True, True, False]``) runs
    as ASE's own builders make it. A non-periodic direction has no images, so the
    dropped vector changes nothing the model sees."""
    cell = np.array(atoms.cell, dtype=float)
    cell[~np.asarray(atoms.pbc, dtype=bool)] = 0.0
    return cell


def _run_variant_batched(name, ts_model, description, start: List[Atoms], temperatures_set: List[float],
                         options: Dict[str, Any], out, resume, progress, callback, trajectories,
                         deterministic: bool = False) -> BatchedVariantResult:
    """All replicas of one variant as one TorchSim batch (see the module docstring)."""
    import torch_sim as ts
    from ase.calculators.singlepoint import SinglePointCalculator
    from torch_sim.integrators.md import MDState, velocity_verlet_step
    from torch_sim.integrators.nvt import NVTVRescaleState, nvt_langevin_step

    from ase_symdiag.md.torchsim_steps import bussi_rescale

    from ase_symdiag.report import write_json

    n_rep = len(start)
    n_atoms = len(start[0])
    periodic = bool(start[0].pbc.any())  # as the ASE runner: no angular momentum with any periodic axis
    pbc = torch.tensor(start[0].pbc, dtype=torch.bool)
    dt = options["timestep"] * units.fs
    device, dtype = ts_model.device, ts_model.dtype
    paths = replica_paths(out, name, n_rep, trajectories) if out else {}
    fingerprint = dict(options, variant=name, description=description, replicas_total=n_rep,
                       temperatures_per_replica=temperatures_set, n_atoms=n_atoms,
                       numbers=start[0].numbers.tolist(), trajectories=bool(trajectories),
                       pbc=start[0].pbc.tolist(), constraints=md_constraints.describe(start[0]))

    rows: List[List[Dict[str, float]]] = [[] for _ in range(n_rep)]
    failures: Dict[int, Dict[str, Any]] = {}
    frames = [0] * n_rep
    transferred = np.zeros(n_rep)
    step = 0
    checkpoint = None
    if out and resume and os.path.exists(paths["state"]):
        checkpoint, rows = restore_checkpoint(name, paths, fingerprint, n_rep, trajectories)
        step = int(checkpoint["step"])
        failures = {int(k): v for k, v in checkpoint["failures"].items()}
        frames = list(checkpoint["frames"])
        transferred = np.asarray(checkpoint["transferred"], dtype=float)
    elif out:
        for key, path in paths.items():
            if os.path.exists(path):
                os.unlink(path)

    generator_seed = options["seed"] + 1
    if checkpoint is None:
        positions = np.concatenate([a.positions for a in start])
        momenta = np.concatenate([a.get_momenta() for a in start])
        active = list(range(n_rep))
    else:
        active = [int(r) for r in checkpoint["active"]]
    stochastic = isinstance(ts_model, StochasticRotationModel)

    # stress of the latest model call (pressure records), per active system
    last_stress: Dict[str, Any] = {"value": None}
    at_step = {"value": step}  # the step whose model call is running (named by errors)

    def call_model(state):
        """The model on ``state``; any exception is an error naming the variant and step
        (non-finite outputs are not exceptions: the per-step check counts them as failures)."""
        try:
            return ts_model(state)
        except Exception as error:  # noqa: BLE001 - a bug or a model that raises is no MD failure
            raise step_error(name, at_step["value"], error) from error

    def evaluate(state):
        output = call_model(state)
        if state.constraints and "forces" in output:  # constrained forces, as ASE's get_forces()
            forces = output["forces"].detach().clone()
            for constraint in state.constraints:
                constraint.adjust_forces(state, forces)
            output = dict(output, forces=forces)
        if "stress" in output:
            last_stress["value"] = output["stress"].detach()
        return output

    def warm_up(state):
        """Two discarded calls, so that every call that counts runs TorchScript's
        optimized plan for the current batch shape, in a fresh, a resumed and an
        uninterrupted process alike (its first call on a new shape is a profiling run
        that rounds differently). Random rotations are not consumed."""
        if deterministic:
            return
        saved = ts_model.generator.get_state() if stochastic else None
        for _ in range(2):
            call_model(state)
        if saved is not None:
            ts_model.generator.set_state(saved)

    def make_state(idx, positions, momenta, energy=None, forces=None):
        numbers = np.concatenate([start[r].numbers for r in idx])
        masses = np.concatenate([start[r].get_masses() for r in idx])
        cells = np.stack([torchsim_cell(start[r]).T for r in idx])  # column-vector cells
        base = ts.SimState(
            positions=torch.tensor(positions, dtype=dtype, device=device),
            masses=torch.tensor(masses, dtype=dtype, device=device),
            cell=torch.tensor(cells, dtype=dtype, device=device),
            pbc=pbc.to(device),
            atomic_numbers=torch.tensor(numbers, dtype=torch.long, device=device),
            system_idx=torch.arange(len(idx), device=device).repeat_interleave(n_atoms),
        )
        base.constraints = md_constraints.torchsim_constraints(start[0], len(idx), device)
        warm_up(base)
        if energy is None:
            output = evaluate(base)
            energy, forces = output["energy"].detach(), output["forces"].detach()
        else:
            energy = torch.tensor(energy, dtype=dtype, device=device)
            forces = torch.tensor(forces, dtype=dtype, device=device)
        cls = NVTVRescaleState if options["thermostat_kind"] == "bussi" else MDState
        state = cls.from_state(base, momenta=torch.tensor(momenta, dtype=dtype, device=device), energy=energy, forces=forces)
        state.constraints = base.constraints
        generator = torch.Generator(device=device)
        generator.manual_seed(generator_seed)
        state.rng = generator
        return state

    class _Recorder(torch.nn.Module):  # the model as TorchSim integrators call it
        def __init__(self):
            super().__init__()
            self.device, self.dtype = device, dtype

        def forward(self, state):
            return evaluate(state)

    recorder = _Recorder()
    state = None
    if active:
        if checkpoint is None:
            state = make_state(active, positions, momenta)
        else:
            saved_state = checkpoint["state"]
            state = make_state(active, saved_state["positions"], saved_state["momenta"], saved_state["energy"], saved_state["forces"])
            set_generator_state(state.rng, checkpoint["rng"])
            if stochastic and checkpoint.get("rotation_rng"):
                set_generator_state(ts_model.generator, checkpoint["rotation_rng"])
            if checkpoint.get("stress") is not None:
                last_stress["value"] = torch.tensor(checkpoint["stress"], dtype=dtype, device=device)

    kT_all = torch.tensor([t * units.kB for t in temperatures_set], dtype=dtype, device=device)
    log = open(paths["log"], "a") if out else None
    if log is not None and os.path.getsize(paths["log"]) == 0:
        log.write(log_header(LOG_PREFIX))
    writers = {}

    def save(finished=False):
        if not out:
            return
        data = checkpoint_data(
            name, fingerprint, step=step, finished=finished, active=active, failures=failures, frames=frames,
            transferred=transferred, log_rows=sum(len(r) for r in rows), state=state,
            rotation_generator=ts_model.generator if stochastic else None, stress=last_stress["value"],
        )
        if log is not None:
            log.flush()
        write_json(paths["state"], data)

    def fail(replica, at_step, reason):
        failures[replica] = failure_record(at_step, options["timestep"], reason)

    def record_all(at_step):
        """Records (and checks) every active replica; returns the replicas that fail."""
        pos = state.positions.detach().cpu().double().numpy()
        mom = state.momenta.detach().cpu().double().numpy()
        frc = state.forces.detach().cpu().double().numpy()
        en = state.energy.detach().cpu().double().numpy()
        stress = None if last_stress["value"] is None else last_stress["value"].detach().cpu().double().numpy()
        failed = []
        for k, r in enumerate(active):
            sl = slice(k * n_atoms, (k + 1) * n_atoms)
            atoms = Atoms(numbers=start[r].numbers, positions=pos[sl], cell=start[r].cell, pbc=start[r].pbc,
                          masses=start[r].get_masses())
            atoms.set_momenta(mom[sl], apply_constraint=False)
            atoms.set_constraint([c.copy() for c in start[r].constraints])  # degrees of freedom of the temperature
            results = {"energy": float(en[k]), "forces": frc[sl]}
            if stress is not None:
                results["stress"] = voigt(stress[k])
            atoms.calc = SinglePointCalculator(atoms, **results)
            forces = frc[sl]
            if not (np.all(np.isfinite(forces)) and np.all(np.isfinite(pos[sl])) and math.isfinite(float(en[k]))):
                fail(r, at_step, "non-finite forces" if not np.all(np.isfinite(forces)) else "non-finite energy or positions")
                failed.append(r)
                continue
            row = record(atoms, at_step, options["timestep"], forces, float(transferred[r]), options["distance_cutoff"])
            row = {c: row[c] for c in COLUMNS}
            reason = failure_reason(
                row, rows[r][-1] if rows[r] else None, n_atoms, forces, min_distance=options["min_distance"],
                max_force=options["max_force"], max_energy_jump=options["max_energy_jump"],
                check_energy_jump=options["ensemble"] == "nve",
            )
            rows[r].append(row)
            if log is not None:
                log.write(log_line(row, (r, temperatures_set[r])))
            if trajectories and out:
                if r not in writers:
                    from ase.io.trajectory import Trajectory

                    writers[r] = Trajectory(paths[f"traj{r}"], "a")
                writers[r].write(atoms)
                frames[r] += 1
            if reason:
                fail(r, at_step, reason)
                failed.append(r)
        return failed

    def drop(failed):
        nonlocal state, active
        if not failed:
            return
        keep = [k for k, r in enumerate(active) if r not in failed]
        active = [active[k] for k in keep]
        if not keep:
            state = None
            return
        rng = state.rng
        state = state[keep]
        state.rng = rng
        if last_stress["value"] is not None:
            last_stress["value"] = last_stress["value"][keep]
        warm_up(state)

    bar = None
    started = time.perf_counter()
    steps_run = 0
    atom_steps = 0
    try:
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=options["steps"], initial=step, desc=name, unit="step", leave=False)
        if checkpoint is None and state is not None:
            drop(record_all(0))
            save()
        kind = options["thermostat_kind"]
        gamma = options["friction"] / units.fs
        tau = options["taut"] * units.fs
        while state is not None and step < options["steps"]:
            at_step["value"] = step + 1
            kT = kT_all[torch.tensor(active, device=device)]
            dt_t = torch.as_tensor(dt, dtype=dtype, device=device)
            if kind == "nve":
                state = velocity_verlet_step(state, dt_t, recorder)
            elif kind == "langevin":  # TorchSim's BAOAB
                state = nvt_langevin_step(state, recorder, dt=dt_t, kT=kT, gamma=gamma)
            else:  # bussi: nvt_vrescale_step with the exchanged energy tracked
                before = kinetic_energy(state)
                state = bussi_rescale(state, torch.as_tensor(tau, dtype=dtype, device=device), kT, dt_t)
                exchanged = (kinetic_energy(state) - before).detach().cpu().double().numpy()
                transferred[active] += exchanged
                state = velocity_verlet_step(state, dt_t, recorder)
            state.energy = state.energy.detach()
            state.forces = state.forces.detach()
            step += 1
            steps_run += 1
            atom_steps += state.n_atoms
            if bar is not None:
                bar.update(1)
            # cheap per-step check on the device: non-finite forces/positions
            bad = ~(torch.isfinite(state.forces).all(dim=1) & torch.isfinite(state.positions).all(dim=1))
            failed = []
            if bool(bad.any()):
                per_system = torch.zeros(state.n_systems, dtype=torch.bool, device=device).index_put(
                    (state.system_idx[bad],), torch.ones(int(bad.sum()), dtype=torch.bool, device=device))
                for k in torch.nonzero(per_system).flatten().tolist():
                    fail(active[k], step, "non-finite forces")
                    failed.append(active[k])
            drop(failed)
            if state is not None and (step % options["interval"] == 0 or step == options["steps"]):
                drop(record_all(step))
            if callback is not None:
                callback(name, step, state)
            if state is not None and step % options["checkpoint_every"] == 0 and step < options["steps"]:
                save()
        save(finished=True)
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        for writer in writers.values():
            writer.close()
    wall = time.perf_counter() - started

    replicas = replica_results(name, description, rows, failures, temperatures_set, n_atoms=n_atoms,
                               ensemble=options["ensemble"], steps=options["steps"], periodic=periodic)
    if out:
        write_json(paths["summary"], {"variant": name, "description": description,
                                      "replicas": [rep["summary"] for rep in replicas]})
    return BatchedVariantResult(name=name, description=description, replicas=replicas, files=paths,
                                wall_s=wall, steps_run=steps_run, atom_steps=atom_steps)


# --------------------------------------------------------------------------------------
# the run


def run_md_batched(
    model,
    atoms: Atoms,
    variants: Union[Sequence[Any], Mapping, str] = ("raw", "symmetrized"),
    *,
    replicas: int = 8,
    temperatures: Union[Sequence[float], str] = (300.0,),
    ensemble: str = "nvt",
    thermostat: str = "langevin",
    friction: float = 0.01,
    taut: float = 100.0,
    steps: int = 1000,
    timestep: float = 1.0,
    interval: int = 10,
    out: Optional[str] = None,
    resume: bool = False,
    checkpoint_every: int = 100,
    symmetrize=3,
    batch_size: int = 16,
    device: Optional[str] = None,
    seed: int = 0,
    min_distance: float = 0.5,
    max_force: float = 50.0,
    max_energy_jump: Optional[float] = 0.05,
    distance_cutoff: float = 3.0,
    trajectories: bool = False,
    plot: bool = True,
    progress: bool = False,
    callback: Optional[Callable] = None,
    confidence: float = 0.95,
    deterministic: bool = False,
) -> BatchedMDResult:
    """Replicas x temperatures of each variant of ``model``, batched on TorchSim.

    ``variants``: names from :data:`TORCHSIM_VARIANTS` (list or comma-separated), or
    a dict ``{name: TorchSim model}`` / ``{name: variant name}``. ``temperatures``: K
    (list or ``"300,600,900"``); each gets ``replicas`` replicas, with
    Maxwell-Boltzmann velocities at that temperature (and, in NVT, that target).
    ``ensemble`` ``"nve"`` or ``"nvt"`` with ``thermostat`` ``"langevin"`` (friction
    1/fs) or ``"bussi"`` (``taut`` fs). ``symmetrize``: quadrature of the symmetrized
    variant (anything :func:`~ase_symdiag.o3.quadrature.resolve_quadrature` takes, or
    ``"adaptive"``). Failure thresholds and ``interval``/``checkpoint_every`` as in
    :func:`ase_symdiag.md.run_md`. ``callback(name, step, state)`` after every step.
    ``deterministic``: run TorchScript models unoptimized (bit-exact resume whatever
    TorchScript's executor does; see the comment in the code).
    """
    require_torchsim()
    from ase_symdiag.md.statistics import plot_survival, survival_statistics
    from ase_symdiag.report import write_json

    ensemble, thermostat = check_run_arguments(
        ensemble, thermostat, steps=steps, interval=interval, checkpoint_every=checkpoint_every, timestep=timestep,
        resume=resume, out=out,
    )
    temperatures = parse_temperatures(temperatures)
    if replicas < 1:
        raise MDError(f"replicas must be >= 1, got {replicas}")
    if len(atoms) < 2:
        raise MDError("the batched engine needs at least 2 atoms")
    md_constraints.torchsim_constraints(atoms, 1)  # refuses a constraint TorchSim cannot honour, before any file

    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",") if v.strip()]
    items = list(variants.items()) if isinstance(variants, Mapping) else [(str(v), str(v)) for v in variants]
    check_variant_names([n for n, _ in items])

    temperatures_set = [t for t in temperatures for _ in range(replicas)]
    start = []
    for t in temperatures:
        for r in range(replicas):
            start.append(initial_velocities(atoms, t, seed_for(seed, r, t)))
    options = dict(
        ensemble=ensemble, thermostat_kind="nve" if ensemble == "nve" else thermostat, steps=int(steps),
        timestep=float(timestep), friction=float(friction), taut=float(taut), interval=int(interval),
        checkpoint_every=int(checkpoint_every), seed=int(seed), min_distance=float(min_distance),
        max_force=float(max_force), max_energy_jump=max_energy_jump, distance_cutoff=float(distance_cutoff),
        symmetrize=str(symmetrize),
    )
    results: Dict[str, BatchedVariantResult] = {}
    notes: List[str] = []  # warnings for stderr and summary.json
    # TorchScript's profiling executor runs a model's first call on a new input shape
    # unoptimized and later calls through an optimized plan that rounds differently
    # (measured: 2e-16 eV/A on the Morse model). By default every batch gets two
    # discarded warm-up calls (start, resume, after replicas leave), so that the calls
    # that count all run optimized plans: bit-exact resume in the tests. With
    # deterministic=True TorchScript runs unoptimized throughout (exact whatever the
    # executor does; for PET on the 2-core CPU as fast as the default, 1.69 against
    # 1.75 ms per replica-step in bench/md_throughput.py; on GPUs fusion may matter).
    with run_lock(out):  # one run at a time in an output directory
        with torch.jit.optimized_execution(not deterministic):
            for name, spec in items:
                if isinstance(spec, str):
                    ts_model, description = build_variant(spec, model, atoms, symmetrize=symmetrize, seed=seed,
                                                          batch_size=batch_size, device=device, notes=notes)
                else:
                    ts_model, description = spec, type(spec).__name__
                results[name] = _run_variant_batched(name, ts_model, description, start, temperatures_set, options,
                                                     out, resume, progress, callback, trajectories, deterministic)
        statistics = survival_statistics(
            {name: [rep["summary"] for rep in v.replicas] for name, v in results.items()},
            t_max_ps=steps * timestep / 1000.0, confidence=confidence,
        )
        settings = dict(options, replicas=int(replicas), temperatures=temperatures, engine="torchsim",
                        variants={name: v.description for name, v in results.items()}, n_atoms=len(atoms))
        result = BatchedMDResult(variants=results, settings=settings, statistics=statistics, warnings=notes)
        if out:
            write_json(os.path.join(out, "survival.json"), statistics)
            if plot:
                result.plot = os.path.join(out, "survival.png")
                plot_survival(statistics, result.plot)
            write_json(os.path.join(out, "summary.json"), result.to_dict())
        return result
