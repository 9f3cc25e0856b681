"""Resuming an MD run with other settings is refused in one line naming what changed;
one-atom MD starts from finite momenta (issue 15)."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron

from ase_symdiag.cli.app import main
from ase_symdiag.md import MDError, run_md


def _cluster():
    atoms = Icosahedron("Ar", 2)
    atoms.center(vacuum=5.0)
    return atoms


def _lj(sigma=3.4):
    return LennardJones(sigma=sigma, epsilon=0.0104, rc=8.5, smooth=True)


KWARGS = dict(steps=4, timestep=1.0, temperature=50.0, checkpoint_every=2, distance_cutoff=4.5, plot=False)


class Stop(Exception):
    pass


def _interrupted(out):
    def stop(name, step, atoms):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        run_md({"lj": _lj()}, _cluster(), out=str(out), callback=stop, **KWARGS)


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(timestep=2.0), "timestep 1.0 -> 2.0"),
        (dict(temperature=80.0), "temperature 50.0 -> 80.0"),
        (dict(seed=1), "seed 0 -> 1"),
        (dict(ensemble="nvt"), "ensemble 'nve' -> 'nvt'"),
        (dict(interval=2), "interval 1 -> 2"),
    ],
)
def test_resume_with_other_settings_is_refused(tmp_path, change, named):
    _interrupted(tmp_path / "run")
    with pytest.raises(MDError, match="other settings") as info:
        run_md({"lj": _lj()}, _cluster(), out=str(tmp_path / "run"), resume=True, **dict(KWARGS, **change))
    assert named in str(info.value) and "\n" not in str(info.value)


def test_resume_with_another_model_or_structure_is_refused(tmp_path):
    _interrupted(tmp_path / "run")
    with pytest.raises(MDError, match=r"changed: model\)"):
        run_md({"lj": _lj(sigma=3.3)}, _cluster(), out=str(tmp_path / "run"), resume=True, **KWARGS)
    moved = _cluster()
    moved.positions[0, 0] += 0.01
    with pytest.raises(MDError, match=r"changed: structure\)"):
        run_md({"lj": _lj()}, moved, out=str(tmp_path / "run"), resume=True, **KWARGS)
    # the same settings resume
    result = run_md({"lj": _lj()}, _cluster(), out=str(tmp_path / "run"), resume=True, **KWARGS)
    assert result.variants["lj"].summary["steps_done"] == 4


def test_resume_with_another_model_file_is_refused_on_the_command_line(tmp_path, equivariant_model, broken_model, capsys):
    import ase.io
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    ase.io.write(tmp_path / "cu.extxyz", atoms)
    args = ["md", str(tmp_path / "cu.extxyz"), "--steps", "2", "--checkpoint-every", "1", "--variants", "raw",
            "--out", str(tmp_path / "md"), "-q"]
    assert main([args[0], equivariant_model, *args[1:]]) == 0
    assert main([args[0], broken_model, *args[1:], "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed: model" in err[0]
    assert main([args[0], equivariant_model, *args[1:], "--resume", "--timestep", "0.5"]) == 2
    assert "timestep 1.0 -> 0.5" in capsys.readouterr().err


def test_one_atom_md_has_finite_momenta(tmp_path):
    atom = Atoms("Ar", positions=[[0.0, 0.0, 0.0]])
    result = run_md({"lj": _lj()}, atom, steps=3, temperature=300.0, plot=False, out=str(tmp_path / "one"))
    summary = result.variants["lj"].summary
    assert summary["failure_reason"] is None and summary["steps_done"] == 3
    assert np.all(np.isfinite(result.variants["lj"].records["etot_eV"]))


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(MDError, match="nothing to resume"):
        run_md({"lj": _lj()}, _cluster(), out=str(tmp_path / "empty"), resume=True, **KWARGS)
