"""The reference package's layout: lazy re-exports, no command line in the library,
the data-set command, user-input errors of the SymDiagError hierarchy."""

import ast
import subprocess
import sys

import pytest

from repo import ROOT

import ase_symdiag.reference as reference
from ase_symdiag.errors import ModelError, SymDiagError

PACKAGE = ROOT / "ase_symdiag" / "reference"


def test_reexports_are_lazy_and_resolve():
    code = "import sys, ase_symdiag.reference; print('torch' in sys.modules, 'ase' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    for name in reference.__all__:
        assert getattr(reference, name) is not None
    for name in ("build_pet", "export_pet", "train", "load_config", "load_checkpoint", "model_from_checkpoint",
                 "export_pair_potential", "cu_emt_dataset", "TrainingConfigError", "CheckpointError"):
        assert name in reference.__all__
    with pytest.raises(AttributeError):
        reference.no_such_name


def test_config_needs_no_torch():
    code = "import sys, ase_symdiag.reference.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_library_modules_have_no_command_line(path):
    tree = ast.parse(path.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "argparse" not in imported
    assert "__main__" not in path.read_text()
    assert len(path.read_text().splitlines()) < 500


def test_reference_data_command(tmp_path, capsys):
    from ase_symdiag.cli.reference_data import main
    from ase_symdiag.reference.data import read_dataset

    out = tmp_path / "cu.extxyz"
    assert main(["cu", str(out), "--n", "2", "--seed", "5"]) == 0
    assert "wrote 2 structures" in capsys.readouterr().out
    images = read_dataset(str(out))
    assert len(images) == 2 and images[0].info["stress"].shape == (3, 3)
    assert main(["cu", str(tmp_path / "none.extxyz"), "--n", "-1"]) == 2
    assert "n must be >= 0" in capsys.readouterr().err


def test_bad_user_input_raises_symdiag_errors(tmp_path):
    from ase_symdiag.reference.config import TrainingConfigError, validate_config
    from ase_symdiag.reference.pet import build_pet

    base = {"data": "x.extxyz", "output_dir": "out"}
    with pytest.raises(TrainingConfigError, match="learning_rate must be a number"):
        validate_config(dict(base, training={"learning_rate": "fast"}))
    with pytest.raises(TrainingConfigError, match="split.test must be a number"):
        validate_config(dict(base, split={"train": 0.8, "validation": 0.1, "test": None}))
    assert validate_config(dict(base, training={"learning_rate": "2e-3"}))["training"]["learning_rate"] == "2e-3"
    with pytest.raises(ModelError, match="unknown PET hyper-parameters"):
        build_pet([29], {"depth": 3})
    with pytest.raises(ModelError, match="divisible"):
        build_pet([29], {"d_model": 15, "n_heads": 2})
    with pytest.raises(SymDiagError, match="does not exist"):
        from ase_symdiag.reference.checkpoints import load_checkpoint

        load_checkpoint(str(tmp_path / "missing.pt"))


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A failing save leaves the previous checkpoint and no temporary file."""
    import torch

    from ase_symdiag.reference.checkpoints import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1}, str(path))

    def broken(obj, f):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, str(path))
    monkeypatch.undo()
    assert load_checkpoint(str(path)) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
