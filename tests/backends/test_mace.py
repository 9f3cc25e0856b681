"""MACE through torch-sim's batched MaceModel, imported only when asked for."""

import json
import os
import subprocess
import sys

import ase.io
import pytest
import torch
from ase.build import molecule

pytest.importorskip("mace")
pytest.importorskip("torch_sim")

from family_models import small_mace, small_mace_module  # noqa: E402
from repo import ROOT  # noqa: E402


@pytest.fixture(scope="module")
def mace():
    return small_mace()


@pytest.fixture
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=4)
    return atoms


def test_small_mace_passes_check_at_round_off(mace, crystal, ethanol):
    """MACE is equivariant by construction: float64 errors are round-off on a crystal
    (with stress) and a molecule, proper and improper operations."""
    from ase_symdiag.drivers.equivariance import check_equivariance

    summary = check_equivariance(mace, [crystal, ethanol], n_rotations=6).summary()
    assert summary["energy_max_meV_per_atom"] < 1e-9
    assert summary["force_rms_per_component_relative"] < 1e-10
    assert summary["stress_max_GPa"] < 1e-9


def test_equigrad_of_mace_is_round_off(mace, crystal, ethanol):
    from ase_symdiag.drivers.equigrad import equigrad

    results = equigrad(mace, [crystal, ethanol])
    assert [r.method for r in results] == ["finite-difference"] * 2
    assert max(r.norm for r in results) < 1e-8


def test_mace_file_through_the_command_line(tmp_path, crystal, ethanol, capsys):
    """A MACE ``.model`` file (and ``mace:FILE``) passes a tight gate (exit 0)."""
    from ase_symdiag.cli.app import main

    path = tmp_path / "small.model"
    torch.save(small_mace_module(), path)
    structures = tmp_path / "structures.extxyz"
    ase.io.write(structures, [crystal, ethanol])
    for spec in (str(path), f"mace:{path}"):
        out = tmp_path / "report.json"
        args = ["check", spec, str(structures), "-n", "2", "--max-relative-force-error", "1e-9", "--json", str(out), "-q"]
        assert main(args) == 0, capsys.readouterr().err
        assert json.loads(out.read_text())["passed"] is True


def test_mace_is_imported_only_when_asked_for_and_leaves_torch_load_safe():
    """``import ase_symdiag`` and the spec machinery import no mace; loading it does,
    and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is as it was before (unset)."""
    code = (
        "import os, sys, warnings; warnings.simplefilter('ignore')\n"
        "import ase_symdiag, ase_symdiag.backends.loading, ase_symdiag.backends.mace\n"
        "assert 'mace' not in sys.modules, 'mace imported too early'\n"
        "from ase_symdiag.backends.mace import import_mace_torchsim\n"
        "import_mace_torchsim()\n"
        "assert 'mace' in sys.modules\n"
        "print(os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "None"


def test_not_a_mace_model_is_a_model_error(tmp_path):
    from ase_symdiag.backends.mace import mace_model
    from ase_symdiag.errors import ModelError

    path = tmp_path / "linear.model"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ModelError, match="not a MACE model"):
        mace_model(str(path))
    (tmp_path / "garbage.model").write_text("not a pickle")
    with pytest.raises(ModelError, match="could not load"):
        mace_model(str(tmp_path / "garbage.model"))
