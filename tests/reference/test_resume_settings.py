"""Resuming training with other settings is refused in one line naming what changed (issue 15)."""

import pytest
import torch

from tiny_pet import tiny_config

from ase_symdiag.reference.checkpoints import CheckpointError, load_checkpoint
from ase_symdiag.reference.training import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("resume")
    config = tiny_config(root, tiny_data, epochs=1)
    train(config)
    return root, config


@pytest.mark.parametrize(
    "section, key, value, named",
    [
        ("training", "learning_rate", 0.01, "training.learning_rate"),
        ("training", "augmentation_fraction", 1.0, "training.augmentation_fraction 0.5 -> 1.0"),
        ("training", "batch_size", 2, "training.batch_size 4 -> 2"),
        (None, "seed", 4, "seed 3 -> 4"),
        (None, "max_structures", 6, "max_structures None -> 6"),
        (None, "split", {"train": 0.5, "validation": 0.25, "test": 0.25}, "split"),
    ],
)
def test_changed_settings_are_refused(trained, section, key, value, named):
    _, config = trained
    changed = {**config, "training": dict(config["training"]), "resume": True}
    (changed["training"] if section else changed)[key] = value
    with pytest.raises(CheckpointError, match="other settings") as info:
        train(changed)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_changed_data_is_refused(trained, tmp_path):
    root, config = trained
    data = tmp_path / "data.extxyz"
    from pathlib import Path

    data.write_text(Path(config["data"]).read_text() + "\n")
    with pytest.raises(CheckpointError, match="data file contents"):
        train({**config, "data": str(data), "resume": True})


def test_settings_are_stored_and_a_time_limit_may_change(trained):
    root, config = trained
    checkpoint = load_checkpoint(str(root / "run" / "checkpoint.pt"))
    assert checkpoint["settings"]["training"]["learning_rate"] == config["training"].get("learning_rate", 2e-3)
    resumed = dict(config, training=dict(config["training"], time_limit_s=1000.0), resume=True)
    assert train(resumed)["epochs_completed"] == 1  # nothing left to do, but allowed
