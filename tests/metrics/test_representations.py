"""Symmetry content of features: planted invariant / lambda=1 / lambda=2 channels."""

import numpy as np
import pytest

from ase_symdiag import ModelError, ModelHandle
from ase_symdiag.reference.analytic import export_pair_potential
from ase_symdiag.drivers.representations import representation_content
from ase_symdiag.metrics.representations import (
    LayerContent,
    RepresentationReport,
    feature_outputs,
    skipped_outputs,
)
from ase_symdiag.plots import plot_representations
from ase_symdiag.structures import from_atoms

LAYER = "mtt::features::planted"


@pytest.fixture(scope="module")
def feature_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "features.pt"
    export_pair_potential(path, features=True, axis=(0.3, -0.5, 0.8))
    return str(path)


@pytest.fixture
def structures(crystal, cluster):
    return [from_atoms(crystal), from_atoms(cluster)]


def test_planted_channels_land_where_planted(feature_model, structures):
    report = representation_content(feature_model, structures, lmax=3)
    (layer,) = report.layers
    assert layer.layer == LAYER and layer.n_features == 3
    per_feature = layer.per_feature
    total = sum(per_feature.values())
    # feature 0 is invariant, feature 1 a pure (1, -) and feature 2 a pure (2, +) function
    for index, channel in enumerate([(0, 1), (1, -1), (2, 1)]):
        fraction = per_feature[channel][index] / total[index]
        assert fraction == pytest.approx(1.0, abs=1e-12), (index, channel)
    # Parseval: channels add up to the mean square, nothing above lmax
    assert sum(layer.power.values()) == pytest.approx(layer.mean_square, rel=1e-12)
    assert layer.unresolved < 1e-12 * layer.mean_square


def test_agrees_with_metatomic_character_projection(feature_model, crystal):
    from metatomic.torch import ModelOutput, load_atomistic_model
    from metatomic.torch.o3 import SymmetrizedModel
    from metatomic_ase import MetatomicCalculator

    lmax = 2
    wrapped = SymmetrizedModel.wrap(
        load_atomistic_model(feature_model), max_angular_momentum_target=0, max_angular_momentum_character=lmax
    )
    name = "o3::character_projection::" + LAYER
    theirs = MetatomicCalculator(wrapped).run_model(crystal, {name: ModelOutput(sample_kind="atom")})[name]
    ours = representation_content(feature_model, [from_atoms(crystal)], lmax=lmax).layers[0].per_feature
    for key, block in theirs.items():
        l, chi_sigma = int(key["chi_lambda"]), int(key["chi_sigma"])
        sigma = chi_sigma * (-1) ** l  # metatomic's parity is relative to (-1)^l
        np.testing.assert_allclose(
            block.values.sum(dim=0).numpy(), ours[(l, sigma)], rtol=1e-9, atol=1e-12 * ours[(0, 1)].max()
        )


def test_layer_selection_and_errors(feature_model, equivariant_model, structures):
    handle = ModelHandle.load(feature_model)
    assert feature_outputs(handle) == [LAYER]
    assert representation_content(handle, structures[:1], layers=["planted"], lmax=1).layers[0].layer == LAYER
    with pytest.raises(ModelError, match="no feature output 'layer9'"):
        representation_content(handle, structures, layers=["layer9"])
    with pytest.raises(ModelError, match="exposes no per-atom feature outputs"):
        representation_content(equivariant_model, structures)


def _row(table: str, layer: str) -> list:
    return next(line.split() for line in table.splitlines() if line.startswith(layer))


def test_table_and_heat_map(feature_model, structures, tmp_path):
    report = representation_content(feature_model, structures, lmax=2)
    table = report.table()
    layer = report.layers[0]
    # three features: one invariant, one (1, -), one (2, +), in proportion to their mean squares
    per = {c: float(np.sum(v)) for c, v in layer.per_feature.items()}
    row = _row(table, LAYER)
    header = next(line.split() for line in table.splitlines() if line.startswith("layer"))
    assert header[:5] == ["layer", "features", "invariant", "1", "-"]  # "1 - invariant"
    assert float(row[2]) == pytest.approx(per[(0, 1)] / layer.mean_square, abs=1e-3)
    assert float(row[3]) == pytest.approx(1 - per[(0, 1)] / layer.mean_square, abs=1e-3)
    assert float(row[3 + header[5:].index("2+")]) == pytest.approx(per[(2, 1)] / layer.mean_square, abs=1e-3)
    path = tmp_path / "layers.png"
    plot_representations({"planted": report, "again": report}, str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"
    data = report.to_dict()
    assert data["layers"][0]["per_feature_invariant_fraction"][0] == pytest.approx(1.0, abs=1e-12)


def test_round_off_is_clamped_to_the_unit_interval():
    """An exactly invariant layer whose (0, +) power exceeds its mean square by one ulp
    printed '1 - invariant' as -2.22e-16; fractions are clamped to [0, 1]."""
    mean_square = 3.0
    layer = LayerContent("mtt::features::exact", 1, mean_square, {(0, 1): np.nextafter(mean_square, 4.0)}, 0.0)
    assert layer.fractions[(0, 1)] > 1.0  # the raw ratio is past 1 by round-off
    assert layer.invariant_fraction == 1.0 and layer.breaking_fraction == 0.0
    report = RepresentationReport("model", 0, "Ci", 1, [layer])
    row = _row(report.table(), "mtt::features::exact")
    assert row[2:4] == ["1", "0"]
    assert report.to_dict()["layers"][0]["one_minus_invariant"] == 0.0


def test_auxiliary_outputs_are_not_layers(metatrain_pet, crystal):
    """metatrain's PET exposes 'mtt::aux::cutoff_stats' and last-layer features: not
    learned per-atom features of the network's layers; they are skipped and named."""
    handle = ModelHandle.load(metatrain_pet)
    assert any(name.startswith("mtt::aux::") for name in handle.outputs)
    layers = feature_outputs(handle)
    assert layers == ["feature"]
    skipped = skipped_outputs(handle)
    assert "mtt::aux::cutoff_stats" in skipped and all(n.startswith("mtt::aux::") for n in skipped)
    report = representation_content(handle, [from_atoms(crystal)], lmax=1)
    assert [layer.layer for layer in report.layers] == ["feature"]
    table = report.table()
    assert "skipped (not learned per-atom features): mtt::aux::cutoff_stats (auxiliary" in table
    assert report.to_dict()["skipped"] == skipped
    with pytest.raises(ModelError, match="no feature output 'cutoff_stats' \\(mtt::aux::cutoff_stats: auxiliary"):
        representation_content(handle, [from_atoms(crystal)], layers=["cutoff_stats"], lmax=1)
    for layer in report.layers:
        assert 0.0 <= layer.invariant_fraction <= 1.0 and 0.0 <= layer.breaking_fraction <= 1.0


def test_feature_like_outputs_without_atom_samples_are_skipped():
    from types import SimpleNamespace

    from metatomic.torch import ModelOutput

    handle = SimpleNamespace(outputs={
        "mtt::features::node": ModelOutput(sample_kind="atom"),
        "mtt::features::global": ModelOutput(sample_kind="system"),
        "mtt::aux::cutoff_stats": ModelOutput(sample_kind="atom"),
        "energy": ModelOutput(sample_kind="atom"),
    })
    assert feature_outputs(handle) == ["mtt::features::node"]
    assert skipped_outputs(handle) == {
        "mtt::features::global": "not per-atom (sample_kind 'system')",
        "mtt::aux::cutoff_stats": "auxiliary output, not a learned feature",
    }
