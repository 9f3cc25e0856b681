"""The spectrum: round-off for an exact model, the planted channel with its planted size."""

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

import planted
from conftest import BIAS, KAPPA

from ase_symdiag import ModelHandle, SymDiagCalculator
from ase_symdiag.metrics.adaptive import choose_quadrature
from ase_symdiag.o3.irreps import removed_channels
from ase_symdiag.o3.quadrature import group_quadrature, haar_random, smallest_exact_quadrature
from ase_symdiag.drivers.spectrum import structure_spectrum
from ase_symdiag.metrics.spectrum import channel_powers, spectrum_table
from ase_symdiag.plots import plot_spectra
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


def test_channel_powers_match_an_independent_least_squares_fit():
    """Random band-limited g: its least-squares fit on Haar-random rotations (numpy lstsq,
    no quadrature) gives coefficients whose power per channel is what channel_powers says."""
    from ase_symdiag.o3.irreps import channel_basis

    rng = np.random.default_rng(3)
    lmax = 2
    channels = [(l, s) for l in range(lmax + 1) for s in (1, -1)]
    coefficients = {c: rng.normal(size=(2 * c[0] + 1,) * 2) for c in channels}

    def g(rotations):
        return sum(np.einsum("kab,ab->k", channel_basis(l, s, rotations), coefficients[(l, s)]) for l, s in channels)

    random = haar_random(400, seed=5)
    design = np.concatenate([channel_basis(l, s, random.rotations).reshape(400, -1) for l, s in channels], axis=1)
    fitted, *_ = np.linalg.lstsq(design, g(random.rotations), rcond=None)
    quadrature = smallest_exact_quadrature(2 * lmax)
    powers = channel_powers(g(quadrature.rotations), quadrature, lmax)
    start = 0
    for l, s in channels:
        size = (2 * l + 1) ** 2
        # Parseval: the power of channel (l, s) is |c|^2 / (2l + 1)
        assert powers[(l, s)] == pytest.approx(np.sum(fitted[start:start + size] ** 2) / (2 * l + 1), rel=1e-9)
        start += size


@pytest.mark.parametrize("fixture", ["crystal", "cluster"])
def test_exact_model_spectrum_is_round_off(equivariant_model, fixture, request):
    atoms = request.getfixturevalue(fixture)
    spectrum, prediction = structure_spectrum(ModelHandle.load(equivariant_model), from_atoms(atoms), lmax=2)
    for name, out in spectrum.outputs.items():
        assert max(out.breaking.values()) < 1e-24 * max(out.mean_square, 1.0), name
        assert out.variance < 1e-24 * max(out.mean_square, 1.0)
        assert out.unresolved < 1e-24 * max(out.mean_square, 1.0) and out.n_check == 32
        # an invariant output is all (0, +): its power is its mean square (not a zero spectrum)
        assert out.mean_square > 0 and out.power[(0, 1)] == pytest.approx(out.mean_square, rel=1e-10), name


def test_planted_quadrupole_peaks_at_lambda_2_with_its_amplitude(broken_model, equivariant_model, cluster):
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
    # independent numpy (ASE neighbour list): every sample is the equivariant energy plus
    # the planted term of the rotated cluster, and the (0, +) part drops the planted term
    unbroken = SymDiagCalculator(equivariant_model)
    reference = cluster.copy()
    reference.calc = unbroken
    e_equivariant = reference.get_potential_energy()
    quadrature = prediction.quadrature
    for k in (0, 7, 50, quadrature.size - 1):
        moved = cluster.copy()
        moved.positions = cluster.positions @ quadrature.rotations[k].T
        expected_k = e_equivariant + planted.quadrupole_energy(moved, KAPPA)
        assert prediction.samples["energy"][k] == pytest.approx(expected_k, rel=1e-12)
    assert abs(planted.quadrupole_energy(cluster, KAPPA)) > 1e-4  # the planted term is not small
    assert prediction.mean["energy"] == pytest.approx(e_equivariant, rel=1e-12)
    assert energy.power[(0, 1)] == pytest.approx(e_equivariant**2, rel=1e-12)


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
    assert (2, 1) in removed_channels(tight.quadrature.rotations, tight.quadrature.weights, 3)
    assert tight.quadrature.size == 24 and tight.met
    assert tight.outputs["forces"].residual < 1e-8 and tight.saving == pytest.approx(84 / 24)
    loose = choose_quadrature(spectra, tolerance=1e3, energy_tolerance=1e6, stress_tolerance=1e6)
    assert loose.quadrature.size == 1 and loose.quadrature.name == "C1"
    assert loose.met and loose.decided_by == []


def test_table_and_plot(broken_model, crystal, tmp_path, monkeypatch):
    spectrum, _ = structure_spectrum(ModelHandle.load(broken_model), from_atoms(crystal), lmax=1)
    forces = spectrum.outputs["forces"]
    assert forces.unresolved > 0.9 * forces.variance  # the planted lambda = 2 lies above lmax = 1
    table = spectrum_table([spectrum])
    row = next(line.split() for line in table.splitlines() if line.split()[1:2] == ["forces"])
    header = next(line.split() for line in table.splitlines() if line.startswith("structure"))
    assert header[-1] == ">1" and "NOT attributed" in table
    # the '>1' column is the unresolved amplitude, per force component
    assert float(row[-1]) == pytest.approx(np.sqrt(forces.unresolved / 3), abs=5e-4)  # 3 decimals
    import ase_symdiag.report

    figures = []
    monkeypatch.setattr(ase_symdiag.report, "atomic_savefig", lambda fig, path: figures.append(fig))
    plot_spectra([spectrum], str(tmp_path / "spectrum.png"))
    ax = figures[0].axes[[a.get_title() for a in figures[0].axes].index("forces")]
    assert ">1" in [t.get_text() for t in ax.get_xticklabels()]
    points = {tuple(line.get_xdata()): line.get_ydata() for line in ax.get_lines()}
    assert points[(2,)][0] == pytest.approx(np.sqrt(forces.unresolved / 3))  # '>L' plotted at x = lmax + 1
    monkeypatch.undo()
    path = tmp_path / "spectrum.png"
    plot_spectra([spectrum], str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_random_sets_are_not_exact():
    # half of the operations are improper, so only the pseudoscalar (0, -) averages out
    random = haar_random(20, seed=1)
    assert removed_channels(random.rotations, random.weights, 2) == {(0, -1)}
