"""Symmetry content of features: planted invariant / lambda=1 / lambda=2 channels."""

import numpy as np
import pytest

from ase_symdiag import ModelError, ModelHandle
from ase_symdiag.reference.analytic import export_pair_potential
from ase_symdiag.metrics.representations import feature_outputs, plot_representations, representation_content
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


def test_table_and_heat_map(feature_model, structures, tmp_path):
    report = representation_content(feature_model, structures, lmax=2)
    table = report.table()
    assert "invariant" in table and "1-" in table
    path = tmp_path / "layers.png"
    plot_representations({"planted": report, "again": report}, str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"
    data = report.to_dict()
    assert data["layers"][0]["per_feature_invariant_fraction"][0] == pytest.approx(1.0, abs=1e-12)
