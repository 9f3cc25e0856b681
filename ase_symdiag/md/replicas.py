"""Replica bookkeeping of the batched TorchSim engine: seeds, generator states, results.

Initial velocities come from a seed that depends on (``seed``, replica, temperature)
only (:func:`seed_for`), so every variant, in any run, starts replica ``r`` at
temperature ``T`` from the same velocities (paired comparison).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ase_symdiag.md.observables import COLUMNS

#: extra leading columns of NAME.log
LOG_PREFIX = ("replica", "temperature_set_K")
#: the columns of NAME.log
LOG_COLUMNS = LOG_PREFIX + COLUMNS

def generator_state(generator: torch.Generator) -> str:
    return base64.b64encode(generator.get_state().cpu().numpy().tobytes()).decode("ascii")


def set_generator_state(generator: torch.Generator, text: str) -> None:
    data = np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy()
    generator.set_state(torch.from_numpy(data))


def seed_for(seed: int, replica: int, temperature: float) -> int:
    """Seed of the initial velocities of replica ``replica`` at ``temperature`` K (in
    mK in the seed sequence): the same in any run that has that replica and temperature."""
    milli_kelvin = int(round(float(temperature) * 1000))
    return int(np.random.SeedSequence([int(seed), int(replica), milli_kelvin]).generate_state(1)[0])


def parse_temperatures(temperatures: Union[Sequence[float], str]) -> List[float]:
    """Temperatures (K) from a list or ``"300,600,900"``; :class:`MDError` unless all positive."""
    from ase_symdiag.md.errors import MDError

    if isinstance(temperatures, str):
        temperatures = [float(t) for t in temperatures.split(",") if t.strip()]
    temperatures = [float(t) for t in np.atleast_1d(temperatures)]
    if not temperatures or any(not (t > 0) for t in temperatures):
        raise MDError(f"temperatures must be positive, got {temperatures}")
    return temperatures


def replica_results(name: str, description: str, rows: List[List[Dict[str, float]]], failures: Dict[int, Any],
                    temperatures_set: List[float], *, n_atoms: int, ensemble: str, steps: int,
                    periodic: bool) -> List[Dict[str, Any]]:
    """Per replica ``r``: its index, set temperature (K), summary
    (:func:`~ase_symdiag.md.observables.summarize` of its records ``rows[r]``, named
    ``NAME[r]``) and records (:func:`~ase_symdiag.md.common.records_from_rows`)."""
    from ase_symdiag.md.common import records_from_rows
    from ase_symdiag.md.observables import summarize

    replicas = []
    for r in range(len(rows)):
        summary = summarize(
            f"{name}[{r}]", rows[r], n_atoms=n_atoms, ensemble=ensemble, description=description,
            failure=failures.get(r), steps_requested=steps, periodic=periodic,
        )
        summary["replica"] = r
        summary["temperature_set_K"] = temperatures_set[r]
        replicas.append({"replica": r, "temperature_K": temperatures_set[r], "summary": summary,
                         "records": records_from_rows(rows[r])})
    return replicas


def replica_paths(out: str, name: str, n_rep: int, trajectories: bool) -> Dict[str, str]:
    """The files of variant ``name`` in ``out``: ``log``, ``state`` (checkpoint),
    ``summary`` and, with ``trajectories``, ``trajK`` for each replica K."""
    paths = {"log": os.path.join(out, f"{name}.log"), "state": os.path.join(out, f"{name}.state.json"),
             "summary": os.path.join(out, f"{name}.json")}
    if trajectories:
        for r in range(n_rep):
            paths[f"traj{r}"] = os.path.join(out, f"{name}.r{r}.traj")
    return paths


def checkpoint_data(name: str, fingerprint: Dict[str, Any], *, step: int, finished: bool, active: List[int],
                    failures: Dict[int, Any], frames: List[int], transferred: np.ndarray, log_rows: int, state,
                    rotation_generator: Optional[torch.Generator], stress: Optional[torch.Tensor]) -> Dict[str, Any]:
    """The JSON checkpoint of a batched variant (read back by :func:`restore_checkpoint`):
    the settings ``fingerprint``, the replicas still ``active``, failures, trajectory
    frames and exchanged energies (eV) per replica, how many log lines belong to it,
    the TorchSim ``state`` (positions, momenta, energies, forces; float64 lists) and
    its random generator, the rotation generator and the latest stress (eV/Å^3)."""
    return {
        "variant": name,
        "settings": fingerprint,
        "step": step,
        "finished": finished,
        "active": active,
        "failures": {str(k): v for k, v in failures.items()},
        "frames": frames,
        "transferred": transferred.tolist(),
        "log_rows": log_rows,
        "rng": generator_state(state.rng) if state is not None else None,
        "rotation_rng": generator_state(rotation_generator) if rotation_generator is not None else None,
        "state": None if state is None else {
            "positions": state.positions.detach().cpu().double().tolist(),
            "momenta": state.momenta.detach().cpu().double().tolist(),
            "energy": state.energy.detach().cpu().double().tolist(),
            "forces": state.forces.detach().cpu().double().tolist(),
        },
        "stress": None if stress is None else stress.cpu().double().tolist(),
    }


def kinetic_energy(state) -> torch.Tensor:
    """Kinetic energy per system (eV)."""
    per_atom = 0.5 * (state.momenta ** 2).sum(dim=1) / state.masses
    return torch.zeros(state.n_systems, dtype=state.dtype, device=state.device).index_add(0, state.system_idx, per_atom)


def voigt(stress: np.ndarray) -> np.ndarray:
    from ase_symdiag.o3.transforms import voigt_from_tensor

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
    warnings: List[str] = field(default_factory=list)  # e.g. an adaptive quadrature without its tolerance met

    def table(self) -> str:
        from ase_symdiag.md.statistics import statistics_table

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
            "warnings": self.warnings,
            "plot": self.plot,
        }


def restore_checkpoint(name: str, paths: Dict[str, str], fingerprint: Dict[str, Any], n_rep: int,
                       trajectories: bool) -> Tuple[Dict[str, Any], List[List[Dict[str, float]]]]:
    """Read variant ``name``'s checkpoint, refuse changed settings (naming them), cut its
    log (and trajectories) back to what the checkpoint covers; -> (checkpoint, rows per replica)."""
    import json

    from ase_symdiag.md.errors import MDError
    from ase_symdiag.md.io import check_log_rows, log_header, parse_log_line, truncate_trajectory
    from ase_symdiag.report import atomic_write

    rows: List[List[Dict[str, float]]] = [[] for _ in range(n_rep)]
    with open(paths["state"]) as handle:
        checkpoint = json.load(handle)
    saved = checkpoint["settings"]
    saved.setdefault("constraints", [])  # a checkpoint from before constraints were stored had none honoured
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != json.loads(json.dumps(fingerprint.get(k))))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
        raise MDError(f"cannot resume variant {name!r} from {paths['state']}: settings changed ({details})")
    n_lines = int(checkpoint["log_rows"])
    kept = []
    if os.path.exists(paths["log"]):
        with open(paths["log"]) as handle:
            for line in handle:
                if line.startswith("#") or not line.strip():
                    continue
                if len(kept) == n_lines:
                    break
                if parse_log_line(line, LOG_COLUMNS) is None:
                    break  # a line cut by an interruption
                kept.append(line)
    check_log_rows(paths["log"], len(kept), n_lines)
    for line in kept:
        row = parse_log_line(line, LOG_COLUMNS)
        rows[int(row["replica"])].append({c: row[c] for c in COLUMNS})

    def rewrite(tmp):
        with open(tmp, "w") as handle:
            handle.write(log_header(LOG_PREFIX))
            handle.writelines(kept)

    atomic_write(paths["log"], rewrite)
    if trajectories:
        for r in range(n_rep):
            truncate_trajectory(paths[f"traj{r}"], checkpoint["frames"][r])
    return checkpoint, rows
