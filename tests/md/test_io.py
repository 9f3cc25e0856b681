"""Files of an MD run (ase_symdiag.md.io): one run per output directory, and a resume
refuses a log or trajectory that no longer matches its checkpoint (issue 20)."""

import os
import threading

import pytest
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron
from repo import ROOT

from ase_symdiag.md import MDError, run_md

MODEL = os.path.join(str(ROOT), "models", "morse-broken-l2.pt")


def _argon():
    atoms = Icosahedron("Ar", 2)
    atoms.center(vacuum=5.0)
    return atoms


def _lj():
    return LennardJones(sigma=3.4, epsilon=0.0104, rc=8.5, smooth=True)


KWARGS = dict(steps=6, timestep=2.0, temperature=50.0, checkpoint_every=2, distance_cutoff=4.5, plot=False)


class Stop(Exception):
    pass


def _stop_at(step):
    def stop(name, at, state):
        if at == step:
            raise Stop

    return stop


def test_second_run_into_the_same_directory_is_refused(tmp_path):
    """A first run is paused mid-way (in a thread); a second run into the same --out is
    refused in one line and writes nothing (both ran, one's log beside the other's
    state); the first finishes untouched, and the directory is free afterwards."""
    out = str(tmp_path / "run")
    paused, release = threading.Event(), threading.Event()
    outcome = {}

    def hold(name, step, atoms):
        if step == 2:
            paused.set()
            release.wait(timeout=60)

    def first():
        outcome["first"] = run_md({"first": _lj()}, _argon(), out=out, callback=hold, **KWARGS)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert paused.wait(timeout=60)
        with pytest.raises(MDError, match="in use by another md run") as info:
            run_md({"second": _lj()}, _argon(), out=out, **KWARGS)
        assert "\n" not in str(info.value)
        assert not os.path.exists(os.path.join(out, "second.log"))
    finally:
        release.set()
        thread.join(timeout=60)
    assert outcome["first"].variants["first"].summary["steps_done"] == 6
    again = run_md({"second": _lj()}, _argon(), out=out, **KWARGS)
    assert again.variants["second"].summary["steps_done"] == 6


def _remove(path):
    os.unlink(path)


def _cut(path):
    with open(path) as handle:
        lines = handle.readlines()
    with open(path, "w") as handle:
        handle.writelines(lines[:2])  # header and the first record


@pytest.mark.parametrize("damage", [_remove, _cut], ids=["deleted", "cut"])
@pytest.mark.parametrize("kind", ["log", "traj"])
def test_resume_refuses_a_log_or_trajectory_that_lost_records(tmp_path, damage, kind):
    """Interrupted at step 5 (checkpoint at step 4, 5 records), then the log or the
    trajectory deleted or cut to one record: the resume is refused (it carried on and
    its summary covered the resumed half of the run)."""
    out = tmp_path / "run"
    with pytest.raises(Stop):
        run_md({"lj": _lj()}, _argon(), out=str(out), callback=_stop_at(5), **KWARGS)
    path = out / f"lj.{kind}"
    if kind == "traj" and damage is _cut:
        from ase.io import read, write

        write(str(path), read(str(path), index=0))
    else:
        damage(str(path))
    what = "log" if kind == "log" else "trajectory"
    with pytest.raises(MDError, match=f"--resume: {what}") as info:
        run_md({"lj": _lj()}, _argon(), out=str(out), resume=True, **KWARGS)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("damage", [_remove, _cut], ids=["deleted", "cut"])
def test_torchsim_resume_refuses_a_log_that_lost_records(tmp_path, damage):
    """The same for the TorchSim engine's log (deleted: a FileNotFoundError escaped;
    cut: the resume carried on)."""
    pytest.importorskip("torch_sim")
    from ase_symdiag.md.torchsim import run_md_batched

    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=3)
    options = dict(replicas=2, ensemble="nve", steps=6, interval=1, checkpoint_every=2, plot=False)
    out = tmp_path / "run"
    with pytest.raises(Stop):
        run_md_batched(MODEL, atoms, "raw", out=str(out), callback=_stop_at(5), **options)
    damage(str(out / "raw.log"))
    with pytest.raises(MDError, match="--resume: log") as info:
        run_md_batched(MODEL, atoms, "raw", out=str(out), resume=True, **options)
    assert "\n" not in str(info.value)
