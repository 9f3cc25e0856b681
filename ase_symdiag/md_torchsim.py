"""Batched MD stability runs on TorchSim: replicas x temperatures x variants.

:func:`run_md_batched` runs, for each *variant* of a model, ``replicas`` independent
trajectories at each of ``temperatures`` as ONE batched TorchSim state (one model call
per step for the whole batch, state kept on the model's device), and records for every
replica the observables of the ASE runner (:mod:`ase_symdiag.md`: energies,
temperature, total and angular momentum, pressure, minimum distance, largest force,
same definitions, computed by the same functions) every ``interval`` steps. A replica
stops at its first failure (the criteria of the ASE runner, plus non-finite forces or
positions at any step) and leaves the batch; the others go on.

Variants, each a TorchSim model (``metatomic_torchsim.MetatomicModel`` over a
metatomic TorchScript model, as users run them, or a thin wrapper around one):

- ``raw``: the model itself (conservative forces);
- ``symmetrized``: :func:`ase_symdiag.export.export_symmetrized` at ``symmetrize``
  (default degree 3; ``"adaptive"`` picks the cheapest quadrature from the model's
  measured breaking spectrum, as ``ase-symdiag symmetrize`` does);
- ``corrected``: conservative forces with the net force, and for finite systems the
  net torque, removed (:class:`CorrectedModel`, batched; the same forces as
  :func:`ase_symdiag.export.export_corrected` run through metatomic-torchsim's
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
momentum and rotation (:func:`ase_symdiag.md._initial_velocities`), from a seed that
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
- ``NAME.json``: per-replica summaries (:func:`ase_symdiag.md.summarize`);
- ``NAME.rK.traj`` with ``trajectories=True``: one ASE trajectory per replica K.

and ``summary.json`` (settings, per-replica summaries, the statistics of
:mod:`ase_symdiag.md_stats`), ``survival.json`` and ``survival.png``.

Units as in :mod:`ase_symdiag.md`; TorchSim's metal units are ASE's (amu, Å, eV,
time unit ``ase.units.fs`` per fs).
"""

from __future__ import annotations

import base64
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from ase import Atoms, units

from .md import (
    COLUMNS,
    MDError,
    _check,
    _fmt,
    _initial_velocities,
    _record,
    _truncate_trajectory,
    summarize,
)

#: variants this engine builds from a model
TORCHSIM_VARIANTS = ("raw", "symmetrized", "corrected", "stochastic")
#: extra leading columns of NAME.log
LOG_COLUMNS = ("replica", "temperature_set_K") + COLUMNS
THERMOSTATS = ("langevin", "bussi")

try:  # the ModelInterface base class, when torch-sim is installed
    from torch_sim.models.interface import ModelInterface as _ModelBase
except ImportError:  # pragma: no cover - the module then fails at run time with a clear message
    _ModelBase = torch.nn.Module


def _require_torchsim():
    try:
        import torch_sim  # noqa: F401
        import metatomic_torchsim  # noqa: F401
    except ImportError as error:
        raise MDError(
            f"the TorchSim engine needs torch-sim-atomistic and metatomic-torchsim (Python >= 3.12): "
            f'pip install -e ".[torchsim]" ({error})'
        ) from None


# --------------------------------------------------------------------------------------
# the stochastic-rotation model


def haar_rotations(n: int, generator: torch.Generator, improper: bool = True) -> torch.Tensor:
    """``n`` Haar-random O(3) (or SO(3)) matrices, float64 on the generator's device
    (QR of a Gaussian matrix with the sign fix of Mezzadri 2007, as
    :class:`ase_symdiag.corrections.StochasticRotation`)."""
    z = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64, device=generator.device)
    q, r = torch.linalg.qr(z)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    if not improper:
        q = torch.where((torch.linalg.det(q) < 0)[:, None, None], -q, q)
    return q


class StochasticRotationModel(_ModelBase):
    """A TorchSim model that evaluates ``inner`` on ``x R_s^T`` with a fresh
    Haar-random O(3) operation ``R_s`` per system and call, and returns the
    back-rotated outputs: ``E(R x)``, ``F(R x) R``, ``R^T S(R x) R``.

    Unbiased for the fully symmetrized prediction at the cost of one evaluation; see
    :class:`ase_symdiag.corrections.StochasticRotation`. ``generator`` (a CPU
    ``torch.Generator``, float64 draws: the same rotations on any device) is part of
    the MD checkpoint. ``last_rotations`` holds the ``(n_systems, 3, 3)`` operations
    of the latest call.
    """

    def __init__(self, inner, *, seed: int = 0, improper: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self._device = inner.device
        self._dtype = inner.dtype
        self._compute_forces = True
        self._compute_stress = bool(inner.compute_stress)
        self.improper = bool(improper)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(seed))
        self.last_rotations: Optional[torch.Tensor] = None

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        import torch_sim as ts

        rotations = haar_rotations(state.n_systems, self.generator, self.improper).to(state.device, state.dtype)
        self.last_rotations = rotations
        per_atom = rotations[state.system_idx]  # (N, 3, 3)
        positions = torch.einsum("nij,nj->ni", per_atom, state.positions)  # x R^T, row by row
        rotated = ts.SimState(
            positions=positions,
            masses=state.masses,
            cell=rotations @ state.cell,  # column-vector cell: R C
            pbc=state.pbc,
            atomic_numbers=state.atomic_numbers,
            system_idx=state.system_idx,
        )
        out = self.inner(rotated)
        result = {"energy": out["energy"]}
        if "forces" in out:
            result["forces"] = torch.einsum("ni,nij->nj", out["forces"], per_atom)  # F(Rx) R
        if "stress" in out:
            result["stress"] = rotations.transpose(1, 2) @ out["stress"] @ rotations
        return result


class CorrectedModel(_ModelBase):
    """A TorchSim model whose forces are ``inner``'s with the net force removed (mean
    over each system's atoms) and, for finite systems, the net torque about the
    centroid removed (:class:`ase_symdiag.corrections.NetForce` then
    :class:`~ase_symdiag.corrections.NetTorque`, uniform weights), batched over all
    systems in one set of tensor operations; energy and stress pass through.

    The same forces as :func:`ase_symdiag.export.export_corrected` run through
    metatomic-torchsim (tested), at the cost of the raw model instead of about four
    times it (that export evaluates the energy, then each system again with autograd).
    """

    def __init__(self, inner, *, net_torque: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self._device = inner.device
        self._dtype = inner.dtype
        self._compute_forces = True
        self._compute_stress = bool(inner.compute_stress)
        self.net_torque = bool(net_torque)

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        out = dict(self.inner(state))
        forces = out["forces"].to(torch.float64)
        idx = state.system_idx
        n_sys = state.n_systems
        counts = torch.bincount(idx, minlength=n_sys).to(torch.float64).unsqueeze(1)

        def per_system_sum(values):
            return torch.zeros((n_sys,) + values.shape[1:], dtype=values.dtype, device=values.device).index_add(0, idx, values)

        forces = forces - (per_system_sum(forces) / counts)[idx]
        if self.net_torque and not bool(state.pbc.any()):
            positions = state.positions.to(torch.float64)
            r = positions - (per_system_sum(positions) / counts)[idx]
            torque = per_system_sum(torch.linalg.cross(r, forces))
            eye = torch.eye(3, dtype=torch.float64, device=r.device)
            inertia = per_system_sum((r * r).sum(dim=1)).reshape(-1, 1, 1) * eye - per_system_sum(
                r.unsqueeze(2) * r.unsqueeze(1))
            omega = torch.linalg.pinv(inertia) @ torque.unsqueeze(2)  # minimum norm, as lstsq in NetTorque
            forces = forces - torch.linalg.cross(omega.squeeze(2)[idx], r)
        out["forces"] = forces.to(out["forces"].dtype)
        return out


# --------------------------------------------------------------------------------------
# variants as TorchSim models


def adaptive_quadrature(model, atoms: Atoms, lmax: int = 3, n_rattled: int = 4, seed: int = 0):
    """The cheapest quadrature whose leftover breaking is below 1 % of the RMS force
    (:func:`ase_symdiag.adaptive.choose_quadrature`) on ``atoms`` and ``n_rattled``
    rattled copies (0.05 Å); returns the :class:`~ase_symdiag.adaptive.QuadratureChoice`."""
    from .adaptive import choose_quadrature
    from .spectrum import structure_spectrum
    from .structures import from_atoms

    frames = [atoms.copy()]
    for k in range(n_rattled):
        copy = atoms.copy()
        copy.rattle(0.05, seed=seed + k + 1)
        frames.append(copy)
    spectra = [structure_spectrum(model, from_atoms(frame), lmax=lmax)[0] for frame in frames]
    return choose_quadrature(spectra)


def build_variant(kind: str, model, atoms: Atoms, *, symmetrize=3, seed: int = 0, batch_size: int = 16,
                  device: Optional[str] = None, neighbor_skin: float = 0.0, corrected_export: bool = False):
    """``(TorchSim model, description)`` of a named variant of ``model`` (path or
    AtomisticModel) for structures like ``atoms`` (periodic or not).

    ``corrected_export=True`` builds ``corrected`` from
    :func:`~ase_symdiag.export.export_corrected` through metatomic-torchsim's
    ``non_conservative`` option (as LAMMPS or i-PI users run it) instead of the
    equivalent, cheaper :class:`CorrectedModel`. ``neighbor_skin``: metatomic-torchsim's
    Verlet skin; 0 (rebuild every step) keeps each call independent of the history."""
    from metatomic_torchsim import MetatomicModel

    from .export import export_corrected, export_symmetrized
    from .metatomic_model import ModelHandle

    periodic = bool(atoms.pbc.all())
    if atoms.pbc.any() and not periodic:
        raise MDError("the TorchSim engine supports fully periodic or fully finite structures")
    handle = ModelHandle.load(model, device=device)
    options = dict(device=handle.device, compute_stress=periodic, neighbor_skin=neighbor_skin, uncertainty_threshold=None)
    if kind == "raw":
        return MetatomicModel(handle.model, **options), "raw"
    if kind == "symmetrized":
        from .symmetrize import resolve_quadrature

        note = ""
        if symmetrize == "adaptive":
            choice = adaptive_quadrature(handle, atoms, seed=seed)
            quadrature, note = choice.quadrature, " adaptive"
        else:
            quadrature = resolve_quadrature(symmetrize)
        exported = _scripted(export_symmetrized(handle.model, quadrature, batch_size=batch_size))
        return MetatomicModel(exported, **options), f"symmetrized ({quadrature.name}, {quadrature.size} ops{note})"
    if kind == "corrected":
        what = "net_force" if periodic else "net_force, net_torque"
        if corrected_export:
            exported = _scripted(export_corrected(handle.model, net_torque=not periodic))
            nc = True if periodic else "forces"
            return MetatomicModel(exported, non_conservative=nc, **options), f"corrected ({what}; export)"
        inner = MetatomicModel(handle.model, **options)
        return CorrectedModel(inner, net_torque=not periodic), f"corrected ({what})"
    if kind == "stochastic":
        inner = MetatomicModel(handle.model, **options)
        return StochasticRotationModel(inner, seed=seed + 2), "stochastic (1 Haar-random O(3) op per step and replica)"
    raise MDError(f"unknown TorchSim variant {kind!r}; expected one of {', '.join(TORCHSIM_VARIANTS)}")


def _scripted(exported):
    """The exported AtomisticModel as engines load it: saved, then loaded as TorchScript
    (the wrappers of :mod:`ase_symdiag.export` are written for TorchScript)."""
    import tempfile

    from metatomic.torch import load_atomistic_model

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "exported.pt")
        exported.save(path)
        return load_atomistic_model(path)


# --------------------------------------------------------------------------------------
# helpers


def _generator_state(generator: torch.Generator) -> str:
    return base64.b64encode(generator.get_state().cpu().numpy().tobytes()).decode("ascii")


def _set_generator_state(generator: torch.Generator, text: str) -> None:
    data = np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy()
    generator.set_state(torch.from_numpy(data))


def _seed_for(seed: int, replica: int, temperature: float) -> int:
    """Seed of the initial velocities of replica ``replica`` at ``temperature`` K (in
    mK in the seed sequence): the same in any run that has that replica and temperature."""
    milli_kelvin = int(round(float(temperature) * 1000))
    return int(np.random.SeedSequence([int(seed), int(replica), milli_kelvin]).generate_state(1)[0])


def _kinetic(state) -> torch.Tensor:
    """Kinetic energy per system (eV)."""
    per_atom = 0.5 * (state.momenta ** 2).sum(dim=1) / state.masses
    return torch.zeros(state.n_systems, dtype=state.dtype, device=state.device).index_add(0, state.system_idx, per_atom)


def _voigt(stress: np.ndarray) -> np.ndarray:
    from .transforms import voigt_from_tensor

    return np.asarray(voigt_from_tensor(stress), dtype=float)


@dataclass
class BatchedVariantResult:
    """Per-replica records and summaries of one variant."""

    name: str
    description: str
    replicas: List[Dict[str, Any]]  # per replica: replica, temperature, summary, records
    files: Dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    steps_run: int = 0
    atom_steps: int = 0


@dataclass
class BatchedMDResult:
    variants: Dict[str, BatchedVariantResult]
    settings: Dict[str, Any]
    statistics: Dict[str, Any]
    plot: Optional[str] = None

    def table(self) -> str:
        from .md_stats import statistics_table

        return statistics_table(self.statistics)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "settings": self.settings,
            "variants": {
                name: {
                    "description": v.description,
                    "wall_s": v.wall_s,
                    "atom_steps": v.atom_steps,
                    "replicas": [{k: r[k] for k in ("replica", "temperature_K", "summary")} for r in v.replicas],
                }
                for name, v in self.variants.items()
            },
            "statistics": self.statistics,
            "plot": self.plot,
        }


# --------------------------------------------------------------------------------------
# one variant, all replicas in one batch


def _run_variant_batched(name, ts_model, description, start: List[Atoms], temperatures_set: List[float],
                         options: Dict[str, Any], out, resume, progress, callback, trajectories,
                         deterministic: bool = False) -> BatchedVariantResult:
    import json

    import torch_sim as ts
    from ase.calculators.singlepoint import SinglePointCalculator
    from torch_sim.integrators.md import MDState, momentum_step, position_step, velocity_verlet_step
    from torch_sim.integrators.nvt import NVTVRescaleState, _ou_step, _vrescale_update

    from .report import write_json

    n_rep = len(start)
    n_atoms = len(start[0])
    periodic = bool(start[0].pbc.all())
    dt = options["timestep"] * units.fs
    device, dtype = ts_model.device, ts_model.dtype
    paths = {}
    if out:
        paths = {"log": os.path.join(out, f"{name}.log"), "state": os.path.join(out, f"{name}.state.json"),
                 "summary": os.path.join(out, f"{name}.json")}
        if trajectories:
            for r in range(n_rep):
                paths[f"traj{r}"] = os.path.join(out, f"{name}.r{r}.traj")
    fingerprint = dict(options, variant=name, description=description, replicas_total=n_rep,
                       temperatures_per_replica=temperatures_set, n_atoms=n_atoms,
                       numbers=start[0].numbers.tolist(), trajectories=bool(trajectories))

    rows: List[List[Dict[str, float]]] = [[] for _ in range(n_rep)]
    failures: Dict[int, Dict[str, Any]] = {}
    frames = [0] * n_rep
    transferred = np.zeros(n_rep)
    step = 0
    checkpoint = None
    if out and resume and os.path.exists(paths["state"]):
        with open(paths["state"]) as handle:
            checkpoint = json.load(handle)
        saved = checkpoint["settings"]
        changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != json.loads(json.dumps(fingerprint.get(k))))
        if changed:
            details = "; ".join(f"{k}: {saved.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
            raise MDError(f"cannot resume variant {name!r} from {paths['state']}: settings changed ({details})")
        step = int(checkpoint["step"])
        failures = {int(k): v for k, v in checkpoint["failures"].items()}
        frames = list(checkpoint["frames"])
        transferred = np.asarray(checkpoint["transferred"], dtype=float)
        n_lines = int(checkpoint["log_rows"])
        kept = []
        with open(paths["log"]) as handle:
            for line in handle:
                if line.startswith("#") or not line.strip():
                    continue
                if len(kept) == n_lines:
                    break
                kept.append(line)
        for line in kept:
            values = line.split()
            row = {c: float(v) for c, v in zip(LOG_COLUMNS, values)}
            row["step"] = int(row["step"])
            rows[int(row["replica"])].append({c: row[c] for c in COLUMNS})

        def rewrite(tmp):
            with open(tmp, "w") as handle:
                handle.write("# " + " ".join(LOG_COLUMNS) + "\n")
                handle.writelines(kept)

        from .report import atomic_write

        atomic_write(paths["log"], rewrite)
        if trajectories:
            for r in range(n_rep):
                _truncate_trajectory(paths[f"traj{r}"], frames[r])
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

    def evaluate(state):
        output = ts_model(state)
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
            ts_model(state)
        if saved is not None:
            ts_model.generator.set_state(saved)

    def make_state(idx, positions, momenta, energy=None, forces=None):
        numbers = np.concatenate([start[r].numbers for r in idx])
        masses = np.concatenate([start[r].get_masses() for r in idx])
        cells = np.stack([np.asarray(start[r].cell).T for r in idx])  # column-vector cells
        base = ts.SimState(
            positions=torch.tensor(positions, dtype=dtype, device=device),
            masses=torch.tensor(masses, dtype=dtype, device=device),
            cell=torch.tensor(cells, dtype=dtype, device=device),
            pbc=bool(periodic),
            atomic_numbers=torch.tensor(numbers, dtype=torch.long, device=device),
            system_idx=torch.arange(len(idx), device=device).repeat_interleave(n_atoms),
        )
        warm_up(base)
        if energy is None:
            output = evaluate(base)
            energy, forces = output["energy"].detach(), output["forces"].detach()
        else:
            energy = torch.tensor(energy, dtype=dtype, device=device)
            forces = torch.tensor(forces, dtype=dtype, device=device)
        cls = NVTVRescaleState if options["thermostat_kind"] == "bussi" else MDState
        state = cls.from_state(base, momenta=torch.tensor(momenta, dtype=dtype, device=device), energy=energy, forces=forces)
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
            _set_generator_state(state.rng, checkpoint["rng"])
            if stochastic and checkpoint.get("rotation_rng"):
                _set_generator_state(ts_model.generator, checkpoint["rotation_rng"])
            if checkpoint.get("stress") is not None:
                last_stress["value"] = torch.tensor(checkpoint["stress"], dtype=dtype, device=device)

    kT_all = torch.tensor([t * units.kB for t in temperatures_set], dtype=dtype, device=device)
    log = open(paths["log"], "a") if out else None
    if log is not None and os.path.getsize(paths["log"]) == 0:
        log.write("# " + " ".join(LOG_COLUMNS) + "\n")
    writers = {}

    def save(finished=False):
        if not out:
            return
        data = {
            "variant": name,
            "settings": fingerprint,
            "step": step,
            "finished": finished,
            "active": active,
            "failures": {str(k): v for k, v in failures.items()},
            "frames": frames,
            "transferred": transferred.tolist(),
            "log_rows": sum(len(r) for r in rows),
            "rng": _generator_state(state.rng) if state is not None else None,
            "rotation_rng": _generator_state(ts_model.generator) if stochastic else None,
            "state": None if state is None else {
                "positions": state.positions.detach().cpu().double().tolist(),
                "momenta": state.momenta.detach().cpu().double().tolist(),
                "energy": state.energy.detach().cpu().double().tolist(),
                "forces": state.forces.detach().cpu().double().tolist(),
            },
            "stress": None if last_stress["value"] is None else last_stress["value"].cpu().double().tolist(),
        }
        if log is not None:
            log.flush()
        write_json(paths["state"], data)

    def fail(replica, at_step, reason):
        failures[replica] = {"step": at_step, "time_ps": at_step * options["timestep"] / 1000.0, "reason": reason}

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
            results = {"energy": float(en[k]), "forces": frc[sl]}
            if stress is not None:
                results["stress"] = _voigt(stress[k])
            atoms.calc = SinglePointCalculator(atoms, **results)
            forces = frc[sl]
            if not (np.all(np.isfinite(forces)) and np.all(np.isfinite(pos[sl])) and math.isfinite(float(en[k]))):
                fail(r, at_step, "non-finite forces" if not np.all(np.isfinite(forces)) else "non-finite energy or positions")
                failed.append(r)
                continue
            row = _record(atoms, at_step, options["timestep"], forces, float(transferred[r]), options["distance_cutoff"])
            row = {c: row[c] for c in COLUMNS}
            reason = _check(row, rows[r][-1] if rows[r] else None, n_atoms, forces, options)
            rows[r].append(row)
            if log is not None:
                log.write(" ".join([str(r), _fmt(temperatures_set[r])] + [_fmt(row[c]) for c in COLUMNS]) + "\n")
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
            kT = kT_all[torch.tensor(active, device=device)]
            dt_t = torch.as_tensor(dt, dtype=dtype, device=device)
            if kind == "nve":
                state = velocity_verlet_step(state, dt_t, recorder)
            elif kind == "langevin":
                # TorchSim's BAOAB (nvt_langevin_step), spelled out to pass our model wrapper
                state = momentum_step(state, dt_t / 2)
                state = position_step(state, dt_t / 2)
                state = _ou_step(state, dt_t, kT, torch.as_tensor(gamma, dtype=dtype, device=device))
                state = position_step(state, dt_t / 2)
                output = recorder(state)
                state.energy, state.forces = output["energy"].detach(), output["forces"].detach()
                state = momentum_step(state, dt_t / 2)
            else:  # bussi: nvt_vrescale_step with the exchanged energy tracked
                before = _kinetic(state)
                state = _vrescale_update(state, torch.as_tensor(tau, dtype=dtype, device=device), kT, dt_t)
                exchanged = (_kinetic(state) - before).detach().cpu().double().numpy()
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

    replicas = []
    for r in range(n_rep):
        summary = summarize(
            f"{name}[{r}]", rows[r], n_atoms=n_atoms, ensemble=options["ensemble"], description=description,
            failure=failures.get(r), steps_requested=options["steps"], periodic=periodic,
        )
        summary["replica"] = r
        summary["temperature_set_K"] = temperatures_set[r]
        records = {c: np.array([row[c] for row in rows[r]], dtype=float) for c in COLUMNS}
        replicas.append({"replica": r, "temperature_K": temperatures_set[r], "summary": summary, "records": records})
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
    variant (anything :func:`~ase_symdiag.symmetrize.resolve_quadrature` takes, or
    ``"adaptive"``). Failure thresholds and ``interval``/``checkpoint_every`` as in
    :func:`ase_symdiag.md.run_md`. ``callback(name, step, state)`` after every step.
    ``deterministic``: run TorchScript models unoptimized (bit-exact resume whatever
    TorchScript's executor does; see the comment in the code).
    """
    _require_torchsim()
    from .md_stats import plot_survival, survival_statistics
    from .report import write_json

    ensemble = ensemble.lower()
    if ensemble not in ("nve", "nvt"):
        raise MDError(f"ensemble must be 'nve' or 'nvt', got {ensemble!r}")
    thermostat = thermostat.lower()
    if thermostat not in THERMOSTATS:
        raise MDError(f"thermostat must be one of {', '.join(THERMOSTATS)}, got {thermostat!r}")
    if isinstance(temperatures, str):
        temperatures = [float(t) for t in temperatures.split(",") if t.strip()]
    temperatures = [float(t) for t in np.atleast_1d(temperatures)]
    if not temperatures or any(not (t > 0) for t in temperatures):
        raise MDError(f"temperatures must be positive, got {temperatures}")
    if replicas < 1:
        raise MDError(f"replicas must be >= 1, got {replicas}")
    if steps < 0 or interval < 1 or checkpoint_every < 1:
        raise MDError("steps must be >= 0, interval and checkpoint_every >= 1")
    if not timestep > 0:
        raise MDError(f"timestep must be positive, got {timestep}")
    if resume and not out:
        raise MDError("resume needs an output directory")
    if len(atoms) < 2:
        raise MDError("the batched engine needs at least 2 atoms")
    if out:
        os.makedirs(out, exist_ok=True)

    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",") if v.strip()]
    items = list(variants.items()) if isinstance(variants, Mapping) else [(str(v), str(v)) for v in variants]
    if not items:
        raise MDError("no variants to run")
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise MDError(f"variant names must be unique, got {names}")

    temperatures_set = [t for t in temperatures for _ in range(replicas)]
    start = []
    for t in temperatures:
        for r in range(replicas):
            start.append(_initial_velocities(atoms, t, _seed_for(seed, r, t)))
    options = dict(
        ensemble=ensemble, thermostat_kind="nve" if ensemble == "nve" else thermostat, steps=int(steps),
        timestep=float(timestep), friction=float(friction), taut=float(taut), interval=int(interval),
        checkpoint_every=int(checkpoint_every), seed=int(seed), min_distance=float(min_distance),
        max_force=float(max_force), max_energy_jump=max_energy_jump, distance_cutoff=float(distance_cutoff),
        symmetrize=str(symmetrize),
    )
    results: Dict[str, BatchedVariantResult] = {}
    for name, spec in items:
        if not name or any(c in name for c in "/\\ ") or name.startswith("."):
            raise MDError(f"bad variant name {name!r} (used as a file name)")
    # TorchScript's profiling executor runs a model's first call on a new input shape
    # unoptimized and later calls through an optimized plan that rounds differently
    # (measured: 2e-16 eV/A on the Morse model). By default every batch gets two
    # discarded warm-up calls (start, resume, after replicas leave), so that the calls
    # that count all run optimized plans: bit-exact resume in the tests. With
    # deterministic=True TorchScript runs unoptimized throughout (exact whatever the
    # executor does; for PET on the 2-core CPU as fast as the default, 1.69 against
    # 1.75 ms per replica-step in bench/md_throughput.py; on GPUs fusion may matter).
    with torch.jit.optimized_execution(not deterministic):
        for name, spec in items:
            if isinstance(spec, str):
                ts_model, description = build_variant(spec, model, atoms, symmetrize=symmetrize, seed=seed,
                                                      batch_size=batch_size, device=device)
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
    result = BatchedMDResult(variants=results, settings=settings, statistics=statistics)
    if out:
        write_json(os.path.join(out, "survival.json"), statistics)
        if plot:
            result.plot = os.path.join(out, "survival.png")
            plot_survival(statistics, result.plot)
        write_json(os.path.join(out, "summary.json"), result.to_dict())
    return result


# --------------------------------------------------------------------------------------
# command line (to be wired into ``ase-symdiag md``)


def add_torchsim_arguments(parser) -> None:
    """The extra options of ``ase-symdiag md`` for the batched TorchSim engine."""
    group = parser.add_argument_group("batched engine (--engine torchsim, Python >= 3.12)")
    group.add_argument("--engine", choices=["ase", "torchsim"], default="ase",
                       help="ase: one run per variant in an ASE loop (default); torchsim: replicas x temperatures batched per variant")
    group.add_argument("--replicas", type=int, default=8, help="replicas per temperature (torchsim; default 8)")
    group.add_argument("--temperatures", default=None,
                       help="comma-separated K, e.g. 300,600,900 (torchsim; default --temperature)")
    group.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    group.add_argument("--trajectories", action="store_true", help="write one ASE trajectory per replica (torchsim)")


def run_torchsim_cli(args, atoms: Atoms) -> int:
    """``ase-symdiag md --engine torchsim``: run, print the statistics table, return 0.

    Uses the ``md`` options (model, variants, ensemble, thermostat, friction, taut,
    steps, timestep, temperature, interval, quadrature, batch_size, seed, thresholds,
    checkpoint_every, out, resume, device, quiet) and those of
    :func:`add_torchsim_arguments`. The thermostat ``bussi`` is TorchSim's v-rescale.
    """
    quadrature: Any = args.quadrature
    if isinstance(quadrature, str) and quadrature.isdigit():
        quadrature = int(quadrature)
    temperatures = args.temperatures if args.temperatures else [args.temperature]
    if getattr(args, "dtype", None) is not None:
        raise MDError("--dtype is not supported by the TorchSim engine (it runs in the model's dtype)")
    result = run_md_batched(
        args.model, atoms, args.variants, replicas=args.replicas, temperatures=temperatures,
        ensemble=args.ensemble, thermostat=args.thermostat, friction=args.friction, taut=args.taut,
        steps=args.steps, timestep=args.timestep, interval=args.interval, out=args.out, resume=args.resume,
        checkpoint_every=args.checkpoint_every, symmetrize=quadrature, batch_size=args.batch_size,
        device=args.device, seed=args.seed, min_distance=args.min_distance, max_force=args.max_force,
        max_energy_jump=args.max_energy_jump, trajectories=args.trajectories, confidence=args.confidence,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(result.table())
    print(f"logs, checkpoints and summaries written to {args.out}; survival curves {result.plot}")
    return 0
