"""Symmetry-content probes recorded during training (issue 5)."""

import pytest
import torch

from tiny_pet import tiny_config as _tiny_config

from ase_symdiag.reference.checkpoints import load_checkpoint
from ase_symdiag.reference.config import TrainingConfigError, validate_config
from ase_symdiag.reference.training import train


def test_probes_recorded_at_chosen_epochs(tmp_path, tiny_data):  # noqa: F811
    torch.set_num_threads(1)
    config = _tiny_config(tmp_path, tiny_data)
    config["training"]["epochs"] = 3
    config["probes"] = {"every": 2, "structures": 1, "lmax": 1}
    train(config)
    history = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))["history"]
    probed = [record["epoch"] for record in history if "representations" in record]
    assert probed == [1, 2, 3]  # first epoch, every 2nd, last
    layers = history[0]["representations"]
    assert set(layers) == {"mtt::features::layer0", "mtt::features::layer1"}
    for content in layers.values():
        # an unconstrained model: mostly invariant (offsets) but not exactly
        assert 0.5 < content["invariant_fraction"] < 1.0 - 1e-9
        assert sum(content["fractions"].values()) == pytest.approx(1.0, abs=1e-6)


def test_probe_config_is_validated(tiny_data):  # noqa: F811
    base = {"data": "x.extxyz", "output_dir": "out"}
    assert validate_config(dict(base, probes={}))["probes"] == {"every": 5, "structures": 2, "lmax": 2}
    with pytest.raises(TrainingConfigError, match="probes"):
        validate_config(dict(base, probes={"often": 1}))
    with pytest.raises(TrainingConfigError, match="probes.every"):
        validate_config(dict(base, probes={"every": 0}))


def test_training_history_command(tmp_path, tiny_data, capsys):  # noqa: F811
    from ase_symdiag.cli.app import main

    torch.set_num_threads(1)
    config = _tiny_config(tmp_path, tiny_data)
    config["probes"] = {"every": 1, "structures": 1, "lmax": 1}
    train(config)
    plot = tmp_path / "history.png"
    assert main(["training-history", str(tmp_path / "run" / "checkpoint.pt"), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "layer0" in printed and "1 - invariant" in printed
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["training-history", str(tmp_path / "missing.pt")]) == 2


def test_training_restores_torch_threads_and_generator(tmp_path, tiny_data):  # noqa: F811
    """train() called torch.set_num_threads(num_threads) and torch.manual_seed(seed) and
    left both changed; it now restores them, and still trains reproducibly."""
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    try:
        torch.set_num_threads(1)
        torch.random.default_generator.manual_seed(99)
        before = torch.random.get_rng_state()
        results = []
        for run in ("a", "b"):
            config = _tiny_config(tmp_path / run, tiny_data, epochs=1)
            config["num_threads"] = 2
            results.append(train(config)["test"])
            assert torch.get_num_threads() == 1
            assert torch.equal(torch.random.get_rng_state(), before)
        assert results[0] == results[1]
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(state)
