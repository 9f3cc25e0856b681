"""Deterministic reference data sets for training the reference PET models.

- :func:`cu_emt_dataset`: fcc Cu bulk (32-atom cubic 2x2x2 cell, some with one
  vacancy) under a random homogeneous strain of up to +-3 %, sampled by short
  Langevin MD runs at 300, 600 and 900 K with ASE's EMT, labelled with EMT energy,
  forces and stress. Only fully periodic bulk cells, so the stress is always defined.
- :func:`ethanol_xtb_dataset`: a gas-phase ethanol molecule sampled by Langevin MD
  at 300, 600 and 1000 K with GFN2-xTB (``tblite``), labelled with energy and forces.

Every generator takes a ``seed``: the same seed always gives the same structures.
:func:`write_dataset` writes extxyz atomically (energy in ``info["energy"]``, forces
in ``arrays["forces"]``, stress (3x3, eV/Å^3) in ``info["stress"]`` for bulk) and
:func:`read_dataset` reads it back with the labels as plain arrays.

Command line (:mod:`ase_symdiag.cli.reference_data`)::

    python -m ase_symdiag.cli.reference_data cu models/data/cu-emt.extxyz --n 400
    python -m ase_symdiag.cli.reference_data ethanol models/data/ethanol-xtb.extxyz --n 500
"""

from __future__ import annotations

import os
import warnings
from typing import List, Sequence

import numpy as np
from ase import Atoms, units

from ase_symdiag.errors import SymDiagError


class DataError(SymDiagError):
    """A data set is missing, unreadable or lacks the labels needed."""


CU_TEMPERATURES = (300.0, 600.0, 900.0)
ETHANOL_TEMPERATURES = (300.0, 600.0, 1000.0)


class _OpenMPThreads:
    """Context manager: run OpenMP code (tblite) with ``n`` threads, then restore.

    tblite's default OpenMP threading is very slow on a busy machine (each GFN2-xTB
    call on ethanol takes ~1 s instead of ~5 ms), and single-threaded reductions make
    the MD trajectories bitwise reproducible.
    """

    def __init__(self, n: int = 1) -> None:
        self.n = n
        self.library = None
        self.previous = None

    def __enter__(self):
        import ctypes
        import ctypes.util

        for name in ("libgomp.so.1", ctypes.util.find_library("gomp"), ctypes.util.find_library("omp")):
            if not name:
                continue
            try:
                self.library = ctypes.CDLL(name)
                self.previous = int(self.library.omp_get_max_threads())
                self.library.omp_set_num_threads(self.n)
                break
            except (OSError, AttributeError):
                self.library = None
        return self

    def __exit__(self, *exc) -> None:
        if self.library is not None and self.previous is not None:
            self.library.omp_set_num_threads(self.previous)


def _label(atoms: Atoms, calc, stress: bool) -> Atoms:
    """A copy of ``atoms`` without calculator, labelled with ``calc``'s results."""
    atoms = atoms.copy()
    atoms.calc = calc
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces(), dtype=np.float64)
    stress_tensor = None
    if stress:
        stress_tensor = np.array(atoms.get_stress(voigt=False), dtype=np.float64)
    atoms.calc = None
    labelled = Atoms(
        numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc
    )
    labelled.info["energy"] = energy
    labelled.arrays["forces"] = forces
    if stress_tensor is not None:
        labelled.info["stress"] = stress_tensor
    return labelled


def _langevin_snapshots(
    atoms: Atoms,
    calc,
    *,
    temperature: float,
    timestep_fs: float,
    friction_per_fs: float,
    n_equilibrate: int,
    n_snapshots: int,
    spacing: int,
    rng: np.random.Generator,
    stress: bool,
) -> List[Atoms]:
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = calc
    # ASE >= 3.28 deprecates MaxwellBoltzmannDistribution (for thermalize_momenta) and
    # Langevin's default fixcm=True; the shipped data sets were generated with exactly
    # these calls, so keep them (reproducibility) and silence the notices.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        dyn = Langevin(
            atoms,
            timestep=timestep_fs * units.fs,
            temperature_K=temperature,
            friction=friction_per_fs / units.fs,
            rng=rng,
        )
    dyn.run(n_equilibrate)
    snapshots = []
    for _ in range(n_snapshots):
        dyn.run(spacing)
        snapshots.append(_label(atoms, calc, stress))
    return snapshots


def cu_emt_dataset(
    n: int = 400,
    seed: int = 0,
    *,
    strain: float = 0.03,
    vacancy_fraction: float = 0.3,
    snapshots_per_run: int = 5,
    temperatures: Sequence[float] = CU_TEMPERATURES,
    lattice: float = 3.61,
) -> List[Atoms]:
    """``n`` labelled Cu fcc bulk structures (EMT energy, forces, stress).

    Each MD run starts from a 32-atom cubic cell (with probability
    ``vacancy_fraction`` one random atom removed), strained by ``1 + eps`` with
    ``eps`` a random symmetric matrix with entries uniform in ``[-strain, strain]``,
    at a temperature cycling over ``temperatures``; after 40 steps (5 fs) of
    equilibration it takes ``snapshots_per_run`` snapshots 20 steps apart.
    """
    from ase.build import bulk
    from ase.calculators.emt import EMT

    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    calc = EMT()
    out: List[Atoms] = []
    run = 0
    while len(out) < n:
        atoms = bulk("Cu", "fcc", a=lattice, cubic=True) * (2, 2, 2)
        if rng.random() < vacancy_fraction:
            del atoms[int(rng.integers(len(atoms)))]
        eps = rng.uniform(-strain, strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        temperature = float(temperatures[run % len(temperatures)])
        frames = _langevin_snapshots(
            atoms,
            calc,
            temperature=temperature,
            timestep_fs=5.0,
            friction_per_fs=0.02,
            n_equilibrate=40,
            n_snapshots=min(snapshots_per_run, n - len(out)),
            spacing=20,
            rng=rng,
            stress=True,
        )
        for frame in frames:
            frame.info["temperature_K"] = temperature
            frame.info["config_type"] = "bulk-vacancy" if len(frame) < 32 else "bulk"
        out.extend(frames)
        run += 1
    return out


def ethanol_xtb_dataset(
    n: int = 500,
    seed: int = 0,
    *,
    snapshots_per_run: int = 25,
    temperatures: Sequence[float] = ETHANOL_TEMPERATURES,
    equilibrate_steps: int = 200,
    spacing: int = 20,
) -> List[Atoms]:
    """``n`` labelled gas-phase ethanol structures (GFN2-xTB energy and forces).

    Needs ``tblite`` (``pip install tblite``). Each MD run (0.5 fs steps, temperature
    cycling over ``temperatures``) equilibrates ``equilibrate_steps`` steps, then takes
    ``snapshots_per_run`` snapshots ``spacing`` steps apart (defaults: 200 and 20, i.e.
    10 fs). tblite runs with one OpenMP thread here (much faster on a busy machine,
    and bitwise reproducible; if the OpenMP runtime cannot be reached, results are
    reproducible to round-off only).
    """
    try:
        from tblite.ase import TBLite
    except ImportError as error:
        raise DataError(
            f"ethanol_xtb_dataset needs tblite (pip install tblite): {error}"
        ) from None
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    calc = TBLite(method="GFN2-xTB", verbosity=0)
    out: List[Atoms] = []
    with _OpenMPThreads(1):
        _ethanol_runs(out, n, rng, calc, snapshots_per_run, temperatures, equilibrate_steps, spacing)
    return out


def _ethanol_runs(out, n, rng, calc, snapshots_per_run, temperatures, equilibrate_steps, spacing):
    from ase.build import molecule

    run = 0
    while len(out) < n:
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.02, rng=rng)
        temperature = float(temperatures[run % len(temperatures)])
        frames = _langevin_snapshots(
            atoms,
            calc,
            temperature=temperature,
            timestep_fs=0.5,
            friction_per_fs=0.01,
            n_equilibrate=equilibrate_steps,
            n_snapshots=min(snapshots_per_run, n - len(out)),
            spacing=spacing,
            rng=rng,
            stress=False,
        )
        for frame in frames:
            frame.info["temperature_K"] = temperature
            frame.info["config_type"] = "gas"
        out.extend(frames)
        run += 1


def write_dataset(images: Sequence[Atoms], path: str) -> None:
    """Write ``images`` to extxyz at ``path`` atomically (temp file + os.replace)."""
    from ase.io import write

    from ase_symdiag.report import atomic_write

    atomic_write(path, lambda tmp: write(tmp, list(images), format="extxyz"))


def read_dataset(path: str, index: str = ":") -> List[Atoms]:
    """Read an extxyz data set; each returned Atoms has ``info["energy"]``,
    ``arrays["forces"]`` and (if present) a 3x3 ``info["stress"]``, no calculator.

    Labels stored by ASE as calculator results (ASE moves ``energy``/``forces``/
    ``stress`` there when reading) are moved back.
    """
    from ase.io import read

    if not os.path.exists(path):
        raise DataError(f"data file '{path}' does not exist")
    try:
        images = read(path, index=index, format="extxyz")
    except Exception as error:
        raise DataError(f"could not read '{path}' as extxyz: {error}") from None
    if isinstance(images, Atoms):
        images = [images]
    out = []
    for k, atoms in enumerate(images):
        results = dict(atoms.calc.results) if atoms.calc is not None else {}
        atoms.calc = None
        energy = results.get("energy", atoms.info.get("energy"))
        forces = results.get("forces", atoms.arrays.get("forces"))
        stress = results.get("stress", atoms.info.get("stress"))
        if energy is None:
            raise DataError(f"{path}: structure {k} has no energy label")
        atoms.info["energy"] = float(energy)
        if forces is not None:
            atoms.arrays["forces"] = np.asarray(forces, dtype=np.float64).reshape(-1, 3)
        if stress is not None:
            stress = np.asarray(stress, dtype=np.float64)
            if stress.size == 6:
                xx, yy, zz, yz, xz, xy = stress
                stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
            atoms.info["stress"] = stress.reshape(3, 3)
        out.append(atoms)
    return out


def force_rms(images: Sequence[Atoms]) -> float:
    """RMS force component (eV/Å) over a data set."""
    forces = np.concatenate([a.arrays["forces"].reshape(-1) for a in images])
    return float(np.sqrt(np.mean(forces**2)))
