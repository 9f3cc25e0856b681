"""The TorchSim engine takes what ASE's builders make (issue 20): a molecule centred in
a box (``pbc=False`` with a cell) and a slab (``pbc=[True, True, False]``), with the
trajectories of the ASE engine."""

import os

import numpy as np
import pytest
from ase.build import fcc111, molecule
from ase.io import read
from repo import ROOT

pytest.importorskip("torch_sim")
pytest.importorskip("metatomic_torchsim")

from ase_symdiag.md import run_md  # noqa: E402
from ase_symdiag.md.replicas import seed_for  # noqa: E402
from ase_symdiag.md.common import initial_velocities as _initial_velocities  # noqa: E402
from ase_symdiag.md.torchsim import run_md_batched, torchsim_cell  # noqa: E402

MODEL = os.path.join(str(ROOT), "models", "morse-broken-l2.pt")
T = 400.0


def boxed_ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.center(vacuum=6.0)  # pbc False, cell 16 x 14 x 14 Å
    return atoms


def boxed_cluster():
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=3)
    atoms.center(vacuum=6.0)  # pbc False with a cell
    return atoms


def slab():
    atoms = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)  # pbc [True, True, False]
    atoms.info.clear()
    atoms.rattle(0.05, seed=3)
    return atoms


def test_torchsim_cell_drops_only_non_periodic_vectors():
    """The slab keeps its in-plane vectors; the boxed molecule has no cell left."""
    atoms = slab()
    cell = torchsim_cell(atoms)
    np.testing.assert_array_equal(cell[:2], np.asarray(atoms.cell)[:2])
    np.testing.assert_array_equal(cell[2], 0.0)
    assert np.all(torchsim_cell(boxed_ethanol()) == 0.0)
    assert np.abs(np.asarray(boxed_ethanol().cell)).max() > 10.0  # the box was there


@pytest.mark.parametrize(
    "make, variant, expected",
    [(boxed_cluster, "raw", "raw"), (boxed_ethanol, "raw", "raw"), (slab, "raw", "raw"), (slab, "symmetrized", "symmetrized (Th, 24 ops)"),
     (slab, "corrected", "corrected (net_force)")],
    ids=["boxed-cluster", "boxed-ethanol", "slab-raw", "slab-symmetrized", "slab-corrected"],
)
def test_torchsim_follows_the_ase_engine(tmp_path, make, variant, expected):
    """Same model, same start (replica 0's velocities handed to the ASE engine), NVE,
    12 steps of 0.25 fs: final positions agree to 1e-8 Å, total energy, temperature,
    momentum and minimum distance records to 1e-8 (relative). On a slab the
    symmetrized variant averages the whole slab (cell turned with it) over Th, and
    the corrected one removes the net force only (no torque with periodic axes): both
    engines alike. (The TorchSim engine crashed on the box and refused the slab.)"""
    atoms = make()
    last = {}
    # the Cu Morse model pulls ethanol's short bonds hard (~150 eV/Å): short steps, no force or
    # energy-jump threshold (the trajectories are compared, not judged)
    common = dict(ensemble="nve", steps=12, timestep=0.25, interval=4, symmetrize=2, plot=False, max_force=1e4,
                  max_energy_jump=None)
    batched = run_md_batched(MODEL, atoms, variant, replicas=1, temperatures=[T], **common,
                             callback=lambda name, step, state: last.update(x=state.positions.detach().numpy().copy()))
    assert batched.variants[variant].description == expected
    start = _initial_velocities(atoms, T, seed_for(0, 0, T))
    serial = run_md(MODEL, start, variant, temperature=None, out=str(tmp_path / "ase"), **common)
    ts_summary = batched.variants[variant].replicas[0]["summary"]
    assert ts_summary["failure_reason"] is None and serial.variants[variant].summary["failure_reason"] is None
    ts_records = batched.variants[variant].replicas[0]["records"]
    ase_records = serial.variants[variant].records
    for column in ("etot_eV", "temperature_K", "momentum", "min_distance_A", "max_force_eV_A"):
        np.testing.assert_allclose(ts_records[column], ase_records[column], rtol=1e-8, atol=1e-10)
    final = read(str(tmp_path / "ase" / f"{variant}.traj"), -1)
    np.testing.assert_allclose(last["x"], final.positions, rtol=0, atol=1e-8)
    assert np.abs(final.positions - atoms.positions).max() > 1e-3  # the atoms did move
