"""Symmetry through training from a real two-epoch ``mtt train`` run of a tiny PET."""

import json

import ase.io
import numpy as np
import torch
from conftest import METATRAIN_PET_HYPERS
from repo import ROOT

from ase_symdiag.cli.app import main

ETHANOL = ROOT / "models" / "data" / "ethanol-xtb.extxyz"
TINY = METATRAIN_PET_HYPERS


def test_checkpoints_and_their_weights(metatrain_run):
    """model_<epoch>.ckpt per epoch; weights='epoch' is the epoch's own state, 'best'
    metatrain's exported one."""
    from ase_symdiag.backends.metatomic.metatrain import model_from_checkpoint, read_checkpoint, training_checkpoints

    run, _ = metatrain_run
    found = training_checkpoints(str(run))
    assert [epoch for epoch, _ in found] == [0, 1]
    path = found[-1][1]
    checkpoint = read_checkpoint(path)
    name = "backend.gnn_layers.0.trans.layers.0.mlp.w_in.weight"
    for weights, key in (("epoch", "model_state_dict"), ("best", "best_model_state_dict")):
        state = model_from_checkpoint(path, weights).state_dict()
        torch.testing.assert_close(state[name], checkpoint[key][name], rtol=0, atol=0)
    first = model_from_checkpoint(found[0][1], "epoch").state_dict()[name]
    assert not torch.equal(first, checkpoint["model_state_dict"][name])  # training moved the weights


def test_history_of_a_metatrain_run(metatrain_run):
    from ase_symdiag.drivers.training_history import metatrain_history
    from ase_symdiag.structures import read_structures

    run, data = metatrain_run
    structures = read_structures(str(data), index="6:8")
    history = metatrain_history(str(run), structures, lmax=1, n_rotations=2)
    nodes = [layer for layer in history.layers if layer.startswith("mtt::feature::gnn_layers.") and layer.endswith("_node")]
    assert len(nodes) == TINY["num_gnn_layers"]
    for layer, points in history.layers.items():
        assert [epoch for epoch, _ in points] == [0, 1], layer
        assert all(0.0 <= fraction <= 1.0 for _, fraction in points)
    assert [row.epoch for row in history.outputs] == [0, 1]
    for row in history.outputs:
        # an unconstrained PET breaks rotational symmetry, measurably and finitely
        assert np.isfinite(row.energy_max_meV_per_atom) and row.energy_max_meV_per_atom > 0
        assert np.isfinite(row.force_rms_per_component_eV_per_A) and row.force_rms_per_component_eV_per_A > 0
        assert row.stress_max_GPa is None  # molecules: no stress
    # the two epochs are different models
    assert history.outputs[0].force_rms_per_component_eV_per_A != history.outputs[1].force_rms_per_component_eV_per_A


def test_training_history_command(metatrain_run, tmp_path, capsys):
    run, data = metatrain_run
    out_json, plot = tmp_path / "h.json", tmp_path / "h.png"
    code = main([
        "training-history", str(run), "--structures", str(data), "--index", "7", "--lmax", "1", "-n", "2",
        "--json", str(out_json), "--plot", str(plot),
    ])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "gnn_layers.1_edge" in out and "force RMS (eV/A)" in out
    data_out = json.loads(out_json.read_text())["run"]
    assert [row["epoch"] for row in data_out["outputs"]] == [0, 1]
    assert len(data_out["layers"]["mtt::feature::gnn_layers.0_node"]) == 2
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_run_folder_needs_structures(metatrain_run, capsys):
    run, _ = metatrain_run
    assert main(["training-history", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give --structures" in err[0]


def test_folder_without_checkpoints_is_one_line(tmp_path, capsys):
    structures = tmp_path / "s.extxyz"
    ase.io.write(structures, ase.io.read(ETHANOL, "0"))
    assert main(["training-history", str(tmp_path), "--structures", str(structures)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model_<epoch>.ckpt under" in err[0]
