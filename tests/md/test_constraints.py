"""ASE constraints in MD runs (ase_symdiag.md.constraints): a resume keeps and compares
them; the TorchSim engine honours FixAtoms and FixCom and refuses the others (issue 20)."""

import os

import numpy as np
import pytest
from ase import units
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron
from ase.constraints import FixAtoms, FixBondLength, FixCom
from ase.io import read
from repo import ROOT

from ase_symdiag.md import MDError, run_md

MODEL = os.path.join(str(ROOT), "models", "morse-broken-l2.pt")
FIXED = [0, 1, 2]


def _lj_cluster(constraint=None):
    atoms = Icosahedron("Ar", 2)
    atoms.center(vacuum=5.0)
    atoms.rattle(0.05, seed=7)
    if constraint is not None:
        atoms.set_constraint(constraint)
    return atoms


def _lj():
    return LennardJones(sigma=3.4, epsilon=0.0104, rc=8.5, smooth=True)


KWARGS = dict(steps=30, timestep=5.0, temperature=300.0, ensemble="nvt", checkpoint_every=5,
              distance_cutoff=4.5, plot=False)


class Stop(Exception):
    pass


def _interrupt_at(step):
    def stop(name, at, atoms):
        if at == step:
            raise Stop

    return stop


def test_resume_keeps_fixed_atoms_in_place(tmp_path):
    """FixAtoms on 3 of 13 atoms, NVT interrupted at step 7 and resumed: the fixed
    atoms stay exactly where they started in every frame (they moved by ~0.1 Å after
    a resume that dropped the constraint), and the resumed run is the uninterrupted one."""
    start = _lj_cluster(FixAtoms(indices=FIXED))
    full = run_md({"lj": _lj()}, start, out=str(tmp_path / "full"), **KWARGS)
    with pytest.raises(Stop):
        run_md({"lj": _lj()}, start, out=str(tmp_path / "cut"), callback=_interrupt_at(7), **KWARGS)
    resumed = run_md({"lj": _lj()}, start, out=str(tmp_path / "cut"), resume=True, **KWARGS)
    frames = read(str(tmp_path / "cut" / "lj.traj"), ":")
    assert len(frames) == 31
    moved = max(np.abs(f.positions[FIXED] - start.positions[FIXED]).max() for f in frames)
    assert moved == 0.0
    free = np.abs(frames[-1].positions - start.positions).max()
    assert free > 0.05  # the other atoms do move
    for column in ("etot_eV", "temperature_K", "max_force_eV_A"):
        np.testing.assert_allclose(resumed.variants["lj"].records[column], full.variants["lj"].records[column],
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("changed", [FixAtoms(indices=[0, 1]), None], ids=["other-indices", "dropped"])
def test_resume_with_other_constraints_is_refused(tmp_path, changed):
    """The settings check compares the constraints (it compared positions and momenta only)."""
    out = str(tmp_path / "run")
    with pytest.raises(Stop):
        run_md({"lj": _lj()}, _lj_cluster(FixAtoms(indices=FIXED)), out=out, callback=_interrupt_at(7), **KWARGS)
    with pytest.raises(MDError, match="constraints") as info:
        run_md({"lj": _lj()}, _lj_cluster(changed), out=out, resume=True, **KWARGS)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------
# TorchSim engine

def _cu_cluster(constraint=None):
    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=3)
    atoms.center(vacuum=6.0)  # pbc False with a box, as ASE builds it
    if constraint is not None:
        atoms.set_constraint(constraint)
    return atoms


@pytest.mark.parametrize("ensemble, thermostat", [("nve", "langevin"), ("nvt", "langevin"), ("nvt", "bussi")])
def test_torchsim_keeps_fixed_atoms_in_place(ensemble, thermostat):
    """30 steps of 2 replicas: fixed atoms stay put (they moved 0.07 Å without a word)."""
    pytest.importorskip("torch_sim")
    from ase_symdiag.md.torchsim import run_md_batched

    start = _cu_cluster(FixAtoms(indices=FIXED))
    last = {}
    result = run_md_batched(MODEL, start, "raw", replicas=2, temperatures=[600.0], ensemble=ensemble,
                            thermostat=thermostat, steps=30, timestep=2.0, interval=10, plot=False,
                            callback=lambda name, step, state: last.update(x=state.positions.detach().numpy().copy()))
    positions = last["x"].reshape(2, len(start), 3)
    assert np.abs(positions[:, FIXED] - start.positions[FIXED]).max() == 0.0
    assert np.abs(positions - start.positions).max() > 0.02
    for replica in result.variants["raw"].replicas:
        assert replica["summary"]["failure_reason"] is None


@pytest.mark.parametrize("constraint, removed_dof", [(FixAtoms(indices=FIXED), 9), (FixCom(), 3)],
                         ids=["FixAtoms", "FixCom"])
def test_torchsim_constraints_match_the_ase_engine(tmp_path, constraint, removed_dof):
    """The same start (TorchSim's replica-0 velocities handed to the ASE engine), NVE,
    20 steps of 2 fs: final positions, total energy, momentum and temperature agree
    between the engines to 1e-8, the temperature counting the degrees of freedom the
    constraint removes (TorchSim's records counted all 3N)."""
    pytest.importorskip("torch_sim")
    from ase_symdiag.md.replicas import seed_for
    from ase_symdiag.md.common import initial_velocities as _initial_velocities
    from ase_symdiag.md.torchsim import run_md_batched

    atoms = _cu_cluster(constraint)
    last = {}
    batched = run_md_batched(MODEL, atoms, "raw", replicas=1, temperatures=[600.0], ensemble="nve", steps=20,
                             timestep=2.0, interval=5, plot=False,
                             callback=lambda name, step, state: last.update(x=state.positions.detach().numpy().copy()))
    start = _initial_velocities(atoms, 600.0, seed_for(0, 0, 600.0))
    serial = run_md(MODEL, start, "raw", ensemble="nve", steps=20, timestep=2.0, interval=5, temperature=None,
                    out=str(tmp_path / "ase"), plot=False)
    ts_records = batched.variants["raw"].replicas[0]["records"]
    ase_records = serial.variants["raw"].records
    for column in ("etot_eV", "temperature_K", "momentum"):
        np.testing.assert_allclose(ts_records[column], ase_records[column], rtol=1e-8, atol=1e-8)
    final = read(str(tmp_path / "ase" / "raw.traj"), -1)
    np.testing.assert_allclose(last["x"], final.positions, rtol=0, atol=1e-8)
    dof = 3 * len(atoms) - removed_dof
    assert ts_records["temperature_K"][0] == pytest.approx(2 * start.get_kinetic_energy() / (dof * units.kB), rel=1e-10)


def test_torchsim_refuses_a_constraint_it_cannot_honour(tmp_path):
    """FixBondLength has no TorchSim counterpart: refused in one line naming it, before
    any file is written (it was ignored without a word)."""
    pytest.importorskip("torch_sim")
    from ase_symdiag.md.torchsim import run_md_batched

    out = tmp_path / "run"
    with pytest.raises(MDError, match="FixBondLength") as info:
        run_md_batched(MODEL, _cu_cluster(FixBondLength(0, 1)), "raw", replicas=1, steps=2, out=str(out), plot=False)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_torchsim_fixed_atoms_stay_put_when_replicas_leave():
    """Replicas failing a tight force threshold leave the batch (the state is sliced,
    constraints with it): the fixed atoms of those left stay exactly in place."""
    pytest.importorskip("torch_sim")
    from ase_symdiag.md.torchsim import run_md_batched

    start = _cu_cluster(FixAtoms(indices=FIXED))
    seen = {}

    def keep(name, step, state):
        if state is not None:
            seen[step] = (state.n_systems, state.positions.detach().numpy().reshape(state.n_systems, -1, 3).copy())

    result = run_md_batched(MODEL, start, "raw", replicas=4, temperatures=[300.0, 3000.0], ensemble="nvt", steps=40,
                            timestep=2.0, interval=2, max_force=1.2, plot=False, callback=keep)
    failed = sum(r["summary"]["failure_reason"] is not None for r in result.variants["raw"].replicas)
    assert 0 < failed < 8 and seen[40][0] == 8 - failed
    assert max(np.abs(x[:, FIXED] - start.positions[FIXED]).max() for _, x in seen.values()) == 0.0


def test_lammps_driver_refuses_constraints():
    """lammps_external_md integrates with plain fix nve: a constraint is refused,
    named, before LAMMPS is even loaded (it was ignored)."""
    from ase_symdiag.md import lammps_external_md

    with pytest.raises(MDError, match="FixAtoms"):
        lammps_external_md(_lj(), _lj_cluster(FixAtoms(indices=FIXED)), steps=1)
