"""A real metatrain PET (tiny, random weights, float64) through every command, and
our averaged forces against metatomic-ase's SymmetrizedCalculator."""

import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule

from ase_symdiag import SymDiagCalculator
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.cli.app import main


@pytest.fixture
def pet_structures(tmp_path):
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True)
    crystal.rattle(0.05, seed=1)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.02, seed=2)
    path = tmp_path / "pet.extxyz"
    ase.io.write(path, [crystal, ethanol])
    return str(path), crystal, ethanol


def test_metatrain_pet_loads(metatrain_pet):
    handle = ModelHandle.load(metatrain_pet)
    assert handle.dtype.is_floating_point and str(handle.dtype) == "torch.float64"
    assert handle.per_atom_energy and handle.atomic_types == [1, 6, 8, 29]
    assert "feature" in handle.outputs


@pytest.mark.parametrize("which", ["crystal", "ethanol"])
def test_averaged_forces_match_metatomic_ase(metatrain_pet, pet_structures, which):
    """symmetrize='lebedev:2' is metatomic-ase's SymmetrizedCalculator(l_max=2)."""
    from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

    _, crystal, ethanol = pet_structures
    atoms = crystal if which == "crystal" else ethanol
    ours = atoms.copy()
    ours.calc = SymDiagCalculator(metatrain_pet, symmetrize="lebedev:2")
    theirs = atoms.copy()
    theirs.calc = SymmetrizedCalculator(MetatomicCalculator(metatrain_pet), l_max=2)
    forces = ours.get_forces()
    assert np.abs(forces).max() > 1e-3  # random weights still give forces
    with np.errstate(all="ignore"):  # metatomic-ase divides by the zero volume of a molecule
        reference = theirs.get_forces()
        reference_energy = theirs.get_potential_energy()
    difference = np.abs(forces - reference).max()
    print(f"{which}: max |F_ours - F_metatomic_ase| = {difference:.2e} eV/A")
    assert difference < 1e-10, difference
    assert ours.get_potential_energy() == pytest.approx(reference_energy, abs=1e-10)
    if which == "crystal":
        np.testing.assert_allclose(ours.get_stress(), theirs.get_stress(), atol=1e-10)


COMMANDS = {
    "check": ["-n", "2"],
    "spectrum": ["--lmax", "1"],
    "symmetrize": ["--quadrature", "O", "--export", "{tmp}/pet-sym.pt"],
    "representations": ["--lmax", "1", "--layers", "feature"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_pet_commands(metatrain_pet, pet_structures, tmp_path, capsys, command):
    """Every diagnostic command on the real PET, one (periodic) structure each."""
    path, _, _ = pet_structures
    extra = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command]]
    code = main([command, metatrain_pet, path, "--index", "0", "-q", *extra, "--json", str(tmp_path / "out.json")])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "out.json").read_text())
    if command == "check":
        assert len(data["structures"]) == 1
    if command == "symmetrize":
        assert ModelHandle.load(tmp_path / "pet-sym.pt").energy_key == "energy"
    if command == "representations":
        assert "feature" in capsys.readouterr().out


def test_pet_compare(metatrain_pet, pet_structures, tmp_path, capsys):
    path, _, _ = pet_structures
    assert main(["compare", metatrain_pet, path, "--index", "1", "--variants", "raw,sym:1", "-n", "2"]) == 0
    assert "sym:1" in capsys.readouterr().out


def test_pet_md(metatrain_pet, pet_structures, tmp_path, capsys):
    path, _, _ = pet_structures
    code = main([
        "md", metatrain_pet, path, "--index", "1", "--steps", "3", "--timestep", "0.1", "--quadrature", "lebedev:1",
        "--out", str(tmp_path / "md"), "-q", "--max-force", "1e6", "--max-energy-jump", "1e6", "--min-distance", "0.1",
    ])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert set(summary["variants"]) == {"raw", "symmetrized"}


def test_representations_without_features_is_one_line(broken_model, pet_structures, capsys):
    path, _, _ = pet_structures
    assert main(["representations", broken_model, path, "--index", "0", "--lmax", "1", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no per-atom feature outputs" in err[0]


def test_exported_pet_features_are_the_average_of_the_raw_ones(metatrain_pet, pet_structures, tmp_path):
    """The symmetrized export carries PET's learned features: their quadrature average."""
    from model_outputs import in_process_average, run_outputs

    from ase_symdiag.backends.metatomic.export import export_symmetrized

    _, _, ethanol = pet_structures
    exported = export_symmetrized(metatrain_pet, tmp_path / "sym.pt", quadrature="O")
    assert {"feature", "mtt::aux::energy_last_layer_features"} <= set(exported.capabilities().outputs)
    averaged = run_outputs(str(tmp_path / "sym.pt"), ethanol, ["feature"])["feature"]
    assert np.abs(run_outputs(metatrain_pet, ethanol, ["feature"])["feature"] - averaged).max() > 1e-6  # PET's features do turn
    np.testing.assert_allclose(averaged, in_process_average(metatrain_pet, ethanol, "feature", "O"), atol=1e-12)


# --- every layer of a metatrain PET, from its checkpoint (issue 22, item 1) ---------------


def _layer_names(n_layers: int) -> list:
    names = []
    for i in range(n_layers):
        names += [f"mtt::feature::gnn_layers.{i}_node", f"mtt::feature::gnn_layers.{i}_edge"]
    return names + ["mtt::feature::node_heads.energy.0", "mtt::feature::edge_heads.energy.0", "feature"]


def test_checkpoint_reports_every_layer(metatrain_pet_checkpoint, metatrain_pet, pet_structures):
    """Each GNN layer (node and edge), the heads and 'feature', in network order; the
    final 'feature' is the exported model's, weight for weight."""
    from conftest import METATRAIN_PET_HYPERS

    from ase_symdiag.drivers.representations import representation_content
    from ase_symdiag.structures import from_atoms

    _, _, ethanol = pet_structures
    structures = [from_atoms(ethanol)]
    report = representation_content(metatrain_pet_checkpoint, structures, lmax=1)
    n_layers = METATRAIN_PET_HYPERS["num_gnn_layers"]
    assert [layer.layer for layer in report.layers] == _layer_names(n_layers)
    assert sum(layer.layer.endswith("_node") for layer in report.layers) == n_layers
    for layer in report.layers:
        assert layer.n_features == (16 if layer.layer == "feature" else 8) and layer.mean_square > 0  # feature: node + edge
        # Parseval: the channels and the unresolved rest add up to the mean square
        assert sum(layer.power.values()) + layer.unresolved == pytest.approx(layer.mean_square, rel=1e-9)
    exported = representation_content(metatrain_pet, structures, lmax=1).layers
    assert [layer.layer for layer in exported] == ["feature"]
    from_checkpoint = report.layers[-1]
    assert from_checkpoint.mean_square == pytest.approx(exported[0].mean_square, rel=1e-10)
    assert from_checkpoint.invariant_fraction == pytest.approx(exported[0].invariant_fraction, abs=1e-10)


def test_layer_features_per_atom_and_per_pair(metatrain_pet_checkpoint, pet_structures):
    """Node features are (copies, atoms, d); edge features (copies, pairs, d) with one
    row per pair of the model's neighbour list, in the same order in every copy."""
    from ase_symdiag.backends.metatomic.evaluation import build_graphs, evaluate
    from ase_symdiag.backends.metatomic.metatrain import checkpoint_handle
    from ase_symdiag.o3.operations import haar_rotations
    from ase_symdiag.structures import from_atoms

    _, _, ethanol = pet_structures
    structure = from_atoms(ethanol)
    handle = checkpoint_handle(metatrain_pet_checkpoint)
    assert handle.outputs["mtt::feature::gnn_layers.1_edge"].sample_kind == "atom_pair"
    node, edge = "mtt::feature::gnn_layers.1_node", "mtt::feature::gnn_layers.1_edge"
    rotations = np.concatenate([np.eye(3)[None], haar_rotations(3, seed=1)])
    features = evaluate(handle, structure, rotations, forces=False, stress=False, features=[node, edge]).features
    (graph,) = build_graphs(handle, structure)
    assert features[node].shape == (4, 9, 8)
    assert features[edge].shape == (4, len(graph.first), 8)
    # one copy per call gives the same rows: the order does not depend on the batch
    single = evaluate(handle, structure, rotations, forces=False, stress=False, features=[edge], batch_size=1)
    np.testing.assert_allclose(single.features[edge], features[edge], rtol=1e-10, atol=1e-12)


def test_pairs_are_ordered_by_their_labels():
    """Pair samples arrive in any order; each copy's rows come out sorted by label."""
    import torch
    from metatensor.torch import Labels, TensorBlock

    from ase_symdiag.backends.metatomic.evaluation import _per_pair

    names = ["system", "first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"]
    pairs = [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0]]  # (first, second, shift): rank 2, 0, 1
    rows = [[s] + p for s in (1, 0) for p in pairs]  # systems and pairs shuffled
    values = torch.tensor([[10.0 * s + rank] for s in (1, 0) for rank in (2, 0, 1)])
    block = TensorBlock(values, Labels(names, torch.tensor(rows)), [], Labels(["_"], torch.tensor([[0]])))
    out = _per_pair(block, 2, "edge").numpy()[..., 0]
    np.testing.assert_array_equal(out, [[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])


def test_representations_command_on_checkpoint_and_export(metatrain_pet_checkpoint, metatrain_pet, pet_structures, tmp_path, capsys):
    """A .ckpt shows every layer (table, JSON, heat map); an exported .pt shows
    'feature' and says that the layers need the checkpoint."""
    path, _, _ = pet_structures
    common = [path, "--index", "1", "--lmax", "1", "-q"]
    plot = tmp_path / "layers.png"
    assert main(["representations", metatrain_pet_checkpoint, *common, "--json", str(tmp_path / "l.json"), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "gnn_layers.1_edge" in out and "need the model's checkpoint" not in out
    layers = json.loads((tmp_path / "l.json").read_text())[metatrain_pet_checkpoint]["layers"]
    assert [layer["layer"] for layer in layers] == _layer_names(2)
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["representations", metatrain_pet, *common]) == 0
    out = capsys.readouterr().out
    assert "gnn_layers" not in out.split("note:")[0] and "need the model's checkpoint (.ckpt" in out
    assert main(["representations", metatrain_pet, *common, "--layers", "gnn_layers.0_node"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no feature output 'gnn_layers.0_node'" in err[0] and "checkpoint (.ckpt" in err[0]


@pytest.mark.parametrize(
    "content, message", [(b"garbage", "could not read '.*' as a metatrain checkpoint: "), (None, "error: checkpoint '.*' does not exist")]
)
def test_bad_checkpoint_is_one_line(tmp_path, pet_structures, capsys, content, message):
    import re

    path, _, _ = pet_structures
    ckpt = tmp_path / "model.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    assert main(["representations", str(ckpt), path, "--index", "1", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
