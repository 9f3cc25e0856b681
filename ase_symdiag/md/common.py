"""What both MD engines (the ASE runner :mod:`ase_symdiag.md.runner` and the batched
TorchSim engine :mod:`ase_symdiag.md.torchsim`) share: the checks of the run
arguments, the initial velocities, the failure record and the records of a variant.

Units as in :mod:`ase_symdiag.md`: fs, K, eV, Å, amu.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms, units

from ase_symdiag.md.errors import MDError
from ase_symdiag.md.observables import COLUMNS

#: thermostats of NVT runs, in both engines
THERMOSTATS = ("langevin", "bussi")


def check_run_arguments(ensemble: str, thermostat: str, *, steps: int, interval: int, checkpoint_every: int,
                        timestep: float, resume: bool, out: Optional[str]) -> Tuple[str, str]:
    """Refuse (:class:`MDError`, one line) run arguments neither engine can run;
    returns ``(ensemble, thermostat)`` lower-cased. ``timestep`` in fs."""
    ensemble = ensemble.lower()
    if ensemble not in ("nve", "nvt"):
        raise MDError(f"ensemble must be 'nve' or 'nvt', got {ensemble!r}")
    thermostat = thermostat.lower()
    if thermostat not in THERMOSTATS:
        raise MDError(f"thermostat must be 'langevin' or 'bussi', got {thermostat!r}")
    if steps < 0 or interval < 1 or checkpoint_every < 1:
        raise MDError("steps must be >= 0, interval and checkpoint_every >= 1")
    if not timestep > 0:
        raise MDError(f"timestep must be positive, got {timestep}")
    if resume and not out:
        raise MDError("resume needs an output directory")
    if out and os.path.exists(out) and not os.path.isdir(out):
        raise MDError(f"output '{out}' exists and is not a directory")
    return ensemble, thermostat


def initial_velocities(atoms: Atoms, temperature: Optional[float], seed: int) -> Atoms:
    """A copy of ``atoms`` with Maxwell-Boltzmann momenta at ``temperature`` K from
    ``seed``, without net momentum (nor rotation for finite systems); the momenta of
    ``atoms`` as they are if ``temperature`` is None or 0."""
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    atoms = atoms.copy()
    if temperature is not None and temperature > 0:
        # Maxwell-Boltzmann (written out: the ASE function changed name across versions)
        xi = np.random.default_rng(seed).standard_normal((len(atoms), 3))
        atoms.set_momenta(xi * np.sqrt(atoms.get_masses() * temperature * units.kB)[:, None])
        if len(atoms) == 1:
            # one atom has only centre-of-mass motion: removing it leaves it at rest (ASE's
            # Stationary would rescale 0 K to the target temperature: 0/0 = NaN momenta)
            atoms.set_momenta(np.zeros((1, 3)))
            return atoms
        Stationary(atoms)
        if not atoms.pbc.any() and len(atoms) > 2:
            before = atoms.get_momenta()
            with np.errstate(all="ignore"):
                ZeroRotation(atoms)  # singular for linear molecules: keep the momenta then
            if not np.all(np.isfinite(atoms.get_momenta())):
                atoms.set_momenta(before)
    return atoms


def check_variant_names(names: Sequence[str]) -> None:
    """Refuse an empty list of variants, repeated names, and names unfit as file names
    (empty, with a path separator or a space, or hidden)."""
    if not names:
        raise MDError("no variants to run")
    if len(set(names)) != len(names):
        raise MDError(f"variant names must be unique, got {list(names)}")
    for name in names:
        if not name or any(c in name for c in "/\\ ") or name.startswith("."):
            raise MDError(f"bad variant name {name!r} (used as a file name)")


def failure_record(step: int, timestep_fs: float, reason: str) -> Dict[str, Any]:
    """The failure of a trajectory as summaries and checkpoints store it: the step, its
    time in ps and the reason."""
    return {"step": step, "time_ps": step * timestep_fs / 1000.0, "reason": reason}


def records_from_rows(rows: Sequence[Dict[str, float]]) -> Dict[str, np.ndarray]:
    """One array per :data:`~ase_symdiag.md.observables.COLUMNS` entry, one value per record."""
    return {c: np.array([row[c] for row in rows], dtype=float) for c in COLUMNS}
