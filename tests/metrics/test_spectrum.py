"""The spectrum: round-off for an exact model, the planted channel with its planted size."""

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

import planted
from conftest import BIAS, KAPPA

from ase_symdiag import ModelHandle
from ase_symdiag.metrics.adaptive import choose_quadrature, killed_channels
from ase_symdiag.o3.quadrature import group_quadrature, haar_random, smallest_exact_quadrature
from ase_symdiag.metrics.spectrum import channel_powers, plot_spectra, spectrum_table, structure_spectrum
from ase_symdiag.structures import from_atoms


def test_channel_powers_of_known_functions():
    """g = D^2_{01}(R) has unit-norm-squared 1/5, all in (2, +); det(R) D^1 in (1, +)."""
    from ase_symdiag.o3.irreps import channel_basis

    quadrature = smallest_exact_quadrature(6)
    g = channel_basis(2, 1, quadrature.rotations)[:, 0, 1] + 0.5 * channel_basis(1, -1, quadrature.rotations)[:, 2, 2]
    powers = channel_powers(g, quadrature, lmax=3)
    assert powers[(2, 1)] == pytest.approx(1 / 5, rel=1e-10)
    assert powers[(1, -1)] == pytest.approx(0.25 / 3, rel=1e-10)
    others = [p for c, p in powers.items() if c not in [(2, 1), (1, -1)]]
    assert max(others) < 1e-20


@pytest.mark.parametrize("fixture", ["crystal", "cluster"])
def test_exact_model_spectrum_is_round_off(equivariant_model, fixture, request):
    atoms = request.getfixturevalue(fixture)
    spectrum, _ = structure_spectrum(ModelHandle.load(equivariant_model), from_atoms(atoms), lmax=2)
    for name, out in spectrum.outputs.items():
        assert max(out.breaking.values()) < 1e-24 * max(out.mean_square, 1.0), name
        assert out.variance < 1e-24 * max(out.mean_square, 1.0)


def test_planted_quadrupole_peaks_at_lambda_2_with_its_amplitude(broken_model, cluster):
    spectrum, prediction = structure_spectrum(ModelHandle.load(broken_model), from_atoms(cluster), lmax=3)
    energy = spectrum.outputs["energy"]

    # analytic: E_b(R) = tr(Z R M R^T) with Z = aa^T - 1/3 and M = kappa sum_{i<j} fc d d^T;
    # its Haar variance is |Z0|^2 |M0|^2 / 5 = (2/15) |M0|_F^2, all in (lambda=2, even)
    i, j, d = neighbor_list("ijD", cluster, 5.0)
    r = np.linalg.norm(d, axis=1)
    fc = 0.5 * (np.cos(np.pi * r / 5.0) + 1.0)
    M = 0.5 * KAPPA * np.einsum("p,pa,pb->ab", fc, d, d)
    M0 = M - np.trace(M) / 3 * np.eye(3)
    expected = 2.0 / 15.0 * np.sum(M0**2)
    assert expected > 1e-6
    assert energy.power[(2, 1)] == pytest.approx(expected, rel=1e-8)
    assert energy.variance == pytest.approx(expected, rel=1e-8)
    for name in ("energy", "forces"):
        out = spectrum.outputs[name]
        peak = max(out.breaking, key=out.breaking.get)
        assert peak == (2, 1), name
        rest = sum(p for c, p in out.breaking.items() if c != (2, 1))
        assert rest < 1e-20 * out.mean_square
        # Parseval: the channels add up to the variance over the group
        assert sum(out.breaking.values()) == pytest.approx(out.variance, rel=1e-8)
        assert out.unresolved < 1e-10 * out.variance
    # the per-element split of a one-element cluster is the total
    assert spectrum.outputs["forces"].per_element["Cu"][(2, 1)] == pytest.approx(
        spectrum.outputs["forces"].power[(2, 1)], rel=1e-12
    )
    # the lambda = 0 part is the symmetrized energy, which drops the planted term
    assert prediction.mean["energy"] == pytest.approx(
        prediction.mean["energy"] - 0.0, abs=0
    )


def test_planted_direct_bias_is_a_vector_channel(direct_broken_model, crystal):
    spectrum, _ = structure_spectrum(ModelHandle.load(direct_broken_model), from_atoms(crystal), lmax=2)
    out = spectrum.outputs["direct_forces"]
    w = planted.coordination_weights(crystal)
    expected = np.mean(w**2) * np.sum(np.square(BIAS))
    assert out.power[(1, -1)] == pytest.approx(expected, rel=1e-8)
    assert sum(p for c, p in out.breaking.items() if c != (1, -1)) < 1e-20
    assert spectrum.outputs["forces"].variance < 1e-24


def test_under_resolved_quadrature_is_refused(broken_model, crystal):
    with pytest.raises(ValueError, match="needs 6"):
        structure_spectrum(ModelHandle.load(broken_model), from_atoms(crystal), lmax=3, quadrature=group_quadrature("O"))


def test_adaptive_choice(broken_model, crystal, cluster):
    handle = ModelHandle.load(broken_model)
    spectra = [structure_spectrum(handle, from_atoms(a), lmax=3)[0] for a in (crystal, cluster)]
    tight = choose_quadrature(spectra)
    # the planted term is pure (2, +): the cheapest set killing it is T with inversion (24 ops)
    assert (2, 1) in killed_channels(tight.quadrature, 3)
    assert tight.quadrature.size == 24
    assert tight.residual < 1e-8 and tight.saving == pytest.approx(84 / 24)
    loose = choose_quadrature(spectra, tolerance=1e3)
    assert loose.quadrature.size == 1 and loose.quadrature.name == "C1"


def test_table_and_plot(broken_model, crystal, tmp_path):
    spectrum, _ = structure_spectrum(ModelHandle.load(broken_model), from_atoms(crystal), lmax=2)
    table = spectrum_table([spectrum])
    assert "2+" in table and "forces" in table
    path = tmp_path / "spectrum.png"
    plot_spectra([spectrum], str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_random_sets_are_not_exact():
    # half of the operations are improper, so only the pseudoscalar (0, -) averages out
    assert killed_channels(haar_random(20, seed=1), 2) == {(0, -1)}
