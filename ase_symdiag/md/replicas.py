"""Replica bookkeeping of the batched TorchSim engine: seeds, generator states, results.

Initial velocities come from a seed that depends on (``seed``, replica, temperature)
only (:func:`seed_for`), so every variant, in any run, starts replica ``r`` at
temperature ``T`` from the same velocities (paired comparison).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ase_symdiag.md.observables import COLUMNS

#: extra leading columns of NAME.log
LOG_COLUMNS = ("replica", "temperature_set_K") + COLUMNS

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
    from ase_symdiag.md.io import check_log_rows, truncate_trajectory
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
                if len(line.split()) != len(LOG_COLUMNS):
                    break  # a line cut by an interruption
                kept.append(line)
    check_log_rows(paths["log"], len(kept), n_lines)
    for line in kept:
        values = line.split()
        row = {c: float(v) for c, v in zip(LOG_COLUMNS, values)}
        row["step"] = int(row["step"])
        rows[int(row["replica"])].append({c: row[c] for c in COLUMNS})

    def rewrite(tmp):
        with open(tmp, "w") as handle:
            handle.write("# " + " ".join(LOG_COLUMNS) + "\n")
            handle.writelines(kept)

    atomic_write(paths["log"], rewrite)
    if trajectories:
        for r in range(n_rep):
            truncate_trajectory(paths[f"traj{r}"], checkpoint["frames"][r])
    return checkpoint, rows
