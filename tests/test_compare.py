"""compare: variants of the planted model against an exactly equivariant reference."""

import json

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from ase_symdiag import SymDiagCalculator
from ase_symdiag.compare import ComparedVariant, compare_variants, parse_variant, plot_comparison


@pytest.fixture
def labelled_cluster(cluster, equivariant_model):
    """The cluster labelled with the exactly equivariant model's energy and forces."""
    reference = cluster.copy()
    reference.calc = SymDiagCalculator(equivariant_model)
    energy, forces = reference.get_potential_energy(), reference.get_forces()
    cluster.calc = SinglePointCalculator(cluster, energy=energy, forces=forces)
    return cluster


def test_variants_ranked_as_the_physics_says(broken_model, labelled_cluster, tmp_path):
    comparison = compare_variants(
        broken_model, [labelled_cluster], ["raw", "net_force+net_torque", "sym:2"], n_rotations=3, timing_calls=1
    )
    raw, corrected, symmetrized = comparison.results
    assert all(isinstance(r, ComparedVariant) for r in comparison.results)
    assert raw.evaluations == corrected.evaluations == 1 and symmetrized.evaluations == 24
    assert raw.force_relative > 1e-4
    # the planted term is pure (2, +): T_h removes it exactly
    assert symmetrized.force_relative < 1e-10
    # the planted term averages to zero, so the symmetrized model IS the equivariant
    # reference (bias 0, variance removed), in every orientation
    assert raw.force_rmse_rotated_meV_per_A > 1.0
    assert symmetrized.force_rmse_meV_per_A < 1e-6 and symmetrized.force_rmse_rotated_meV_per_A < 1e-6
    assert raw.energy_mae_meV_per_atom > 0
    # the planted term exerts a net torque; removing it is an orthogonal projection onto
    # torque-free forces, where the reference lies: the error can only go down
    assert corrected.force_rmse_meV_per_A < raw.force_rmse_meV_per_A
    assert "sym:2" in comparison.table()
    json.dumps(comparison.to_dict())
    plot_comparison(comparison, str(tmp_path / "compare.png"))
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_parse_variant():
    assert parse_variant("raw") == {"corrections": []}
    assert parse_variant("sym:O+net_force") == {"corrections": ["net_force"], "symmetrize": "O"}
    assert parse_variant("sym:3") == {"corrections": [], "symmetrize": 3}


@pytest.mark.parametrize("variant, match", [("sym:xyz", "unknown quadrature 'xyz'"), ("sym:grid:3:improper", "did you mean"),
                                            ("sym:lebedev:x", "whole number")])
def test_parse_variant_checks_the_quadrature(variant, match):
    from ase_symdiag.errors import UsageError

    with pytest.raises(UsageError, match=match):
        parse_variant(variant)


def test_compare_command(broken_model, labelled_cluster, tmp_path, capsys):
    import ase.io

    from ase_symdiag.cli.app import main

    path = tmp_path / "labelled.extxyz"
    ase.io.write(path, labelled_cluster)
    out = tmp_path / "compare.json"
    assert main(["compare", broken_model, str(path), "--variants", "raw,sym:1", "-n", "2", "--json", str(out)]) == 0
    assert "F RMSE rotated" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["results"]] == ["raw", "sym:1"]
    assert np.isfinite(data["results"][0]["force_rmse_meV_per_A"])


def test_compare_variants_of_a_torchsim_model(cluster):
    """Any model, not only metatomic files: the planted lambda = 1 and 2 terms of a
    TorchSim model are broken in the raw variant and gone (round-off) after averaging
    over a quadrature exact to degree 2; the corrected variant keeps the breaking."""
    pytest.importorskip("torch_sim")
    from torchsim_planted import PlantedModel, lennard_jones

    comparison = compare_variants(PlantedModel(lennard_jones(), a=0.02, b=0.01), [cluster],
                                  ["raw", "net_force+net_torque", "sym:2"], n_rotations=3, timing_calls=1)
    rows = {r.variant: r for r in comparison.results}
    assert comparison.model == "PlantedModel"
    assert rows["raw"].force_relative > 1e-2 and rows["net_force+net_torque"].force_relative > 1e-2
    assert rows["sym:2"].force_relative < 1e-10 and rows["sym:2"].energy_max_meV_per_atom < 1e-9
    assert rows["sym:2"].evaluations == 24 and rows["raw"].evaluations == 1
