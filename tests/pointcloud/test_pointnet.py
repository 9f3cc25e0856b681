"""The PointNet-style segmenter: determinism, invariant grouping, diagnostics."""

from repo import ROOT
import os

import numpy as np
import pytest
import torch

from ase_symdiag.pointcloud.lartpc import make_dataset
from ase_symdiag.o3.operations import haar_rotations
from ase_symdiag.pointcloud.diagnostics import equivariance_errors, layer_content
from ase_symdiag.pointcloud.pointnet import (
    PointNetConfig,
    PointNetSegmenter,
    as_callables,
    farthest_point_sampling,
    group,
    load_model,
    save_model,
)
from ase_symdiag.o3.quadrature import group_quadrature

CONFIG = PointNetConfig(n_points=128, n_groups=8, group_size=16, dim=32, depth=2, heads=2, seed=3)


@pytest.fixture(scope="module")
def events():
    return make_dataset(2, 128, seed=5)


def test_deterministic_and_shapes(events):
    a, b = PointNetSegmenter(CONFIG), PointNetSegmenter(CONFIG)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    pos, en = torch.as_tensor(events["positions"]), torch.as_tensor(events["energy"])
    out = a.eval()(pos, en, features=True)
    assert out["seg_logits"].shape == (2, 128, 3) and out["event_logits"].shape == (2, 2)
    assert out["pointnet"].shape == (2, 8, 32) and out["block2"].shape == (2, 8, 32)
    assert out["point_head"].shape[:2] == (2, 128)
    assert torch.equal(b.eval()(pos, en)["seg_logits"], out["seg_logits"])


def test_grouping_is_rotation_invariant(events):
    pos = torch.as_tensor(events["positions"], dtype=torch.float64)
    en = torch.as_tensor(events["energy"], dtype=torch.float64)
    start = farthest_point_sampling(pos, en, 4)[:, 0]
    assert torch.equal(start, en[..., 0].argmax(1))
    reference = group(pos, en, 8, 16)
    for R in haar_rotations(4, 0):
        rotated = group(pos @ torch.as_tensor(R).T, en, 8, 16)
        for x, y in zip(reference[:3], rotated[:3]):
            assert torch.equal(torch.sort(x, dim=-1).values, torch.sort(y, dim=-1).values)
        torch.testing.assert_close(reference[3], rotated[3], rtol=1e-9, atol=1e-12)


def test_diagnostics_on_untrained_model(events):
    model = PointNetSegmenter(CONFIG)
    outputs, features, rules = as_callables(model)
    pos, en = events["positions"][0], events["energy"][0]
    errors = equivariance_errors(outputs, pos, en, rules=rules, n_rotations=4, seed=1)
    for name in rules:  # raw coordinates: orientation dependent, but not wildly
        assert 1e-6 < errors.outputs[name].relative < 2.0
    # the identity gives exactly zero error (the evaluation path itself adds nothing)
    same = equivariance_errors(outputs, pos, en, np.eye(3)[None], rules)
    assert all(e.rms == 0.0 for e in same.outputs.values())
    report = layer_content(features, [(pos, en)], 1, quadrature=group_quadrature("T"))
    names = [layer.layer for layer in report.layers]
    assert names == ["pointnet", "embed", "block1", "block2", "point_head"]
    for layer in report.layers:
        assert 0.0 < layer.invariant_fraction < 1.0


def test_save_load_roundtrip(tmp_path, events):
    model = PointNetSegmenter(CONFIG).eval()
    path = str(tmp_path / "m.pt")
    save_model(model, path, {"note": "test"})
    assert os.path.exists(str(tmp_path / "m.json"))
    loaded, config = load_model(path)
    assert config["n_groups"] == 8
    pos, en = torch.as_tensor(events["positions"]), torch.as_tensor(events["energy"])
    assert torch.equal(loaded(pos, en)["seg_logits"], model(pos, en)["seg_logits"])


WEIGHTS = str(ROOT / "models" / "pointnet" / "augmented.pt")


@pytest.mark.skipif(not os.path.exists(WEIGHTS), reason="trained weights not present")
def test_trained_weights_segment_events():
    model, config = load_model(WEIGHTS)
    data = make_dataset(20, config["n_points"], seed=999)
    with torch.no_grad():
        out = model(torch.as_tensor(data["positions"]), torch.as_tensor(data["energy"]))
    accuracy = (out["seg_logits"].argmax(-1).numpy() == data["labels"]).mean()
    assert accuracy > 0.8


def test_pointcloud_cli(tmp_path, capsys):
    import json

    from ase_symdiag.cli import main

    save_model(PointNetSegmenter(CONFIG), str(tmp_path / "tiny.pt"))
    out_json, out_png = str(tmp_path / "r.json"), str(tmp_path / "layers.png")
    argv = ["pointcloud", str(tmp_path), "--events", "1", "--lmax", "1", "--rotations", "2", "--json", out_json, "--plot", out_png]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "seg_logits" in text and "invariant" in text and "block2" in text
    with open(out_json) as handle:
        result = json.load(handle)
    assert 0.0 < result["tiny"]["layers"]["layers"][0]["invariant_fraction"] < 1.0
    assert os.path.getsize(out_png) > 0
