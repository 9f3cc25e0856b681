"""The point-cloud training pipeline (ase_symdiag.pointcloud.training, scripts/train_pointnet.py)."""

import importlib.util
import json

import pytest
import torch

from repo import ROOT

from ase_symdiag.errors import ModelError
from ase_symdiag.pointcloud.lartpc import make_dataset
from ase_symdiag.pointcloud.pointnet import load_model
from ase_symdiag.pointcloud.training import ExperimentSettings, accuracy, run_experiment


def test_tiny_experiment_writes_weights_results_and_plots(tmp_path):
    torch.set_num_threads(1)
    settings = ExperimentSettings(
        train=16, test=8, points=64, epochs=1, batch=8, error_events=1, analysis_events=1, lmax=1, rotations=2,
        models=str(tmp_path / "models"), docs=str(tmp_path / "docs"),
    )
    log = []
    results = run_experiment(settings, log=log.append)
    assert sorted(results["models"]) == ["augmented", "plain"]
    with open(tmp_path / "docs" / "results.json") as handle:
        written = json.load(handle)
    assert written["config"] == dict(vars(settings))
    for image in ("layers.png", "spectrum.png"):
        assert (tmp_path / "docs" / image).read_bytes()[:4] == b"\x89PNG"
    model, config = load_model(str(tmp_path / "models" / "augmented.pt"))
    assert config["n_points"] == 64
    test = make_dataset(8, 64, seed=1)
    assert accuracy(model, test) == written["models"]["augmented"]["test_accuracy"]
    assert any("epoch  1" in line for line in log)


def test_quick_settings():
    quick = ExperimentSettings().quick_run()
    assert quick.quick and quick.epochs == 1 and quick.models.startswith("/tmp/")


def test_script_parses_the_same_settings():
    spec = importlib.util.spec_from_file_location("train_pointnet", ROOT / "scripts" / "train_pointnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main  # argparse lives in the script, the pipeline in the package
    assert "argparse" not in (ROOT / "ase_symdiag" / "pointcloud" / "training.py").read_text()


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="do not exist"):
        load_model(str(tmp_path / "missing.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="could not read"):
        load_model(str(tmp_path / "bad.pt"))
