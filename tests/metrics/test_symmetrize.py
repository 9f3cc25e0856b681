"""Symmetrized inference agrees with metatomic's implementations at the same quadrature."""

import numpy as np
import pytest

from ase_symdiag import SymDiagCalculator, SymDiagError, check_equivariance
from ase_symdiag.o3.quadrature import O3Quadrature, group_quadrature
from ase_symdiag.o3.quadrature import resolve_quadrature


def weighted_mean_std(values: np.ndarray, weights: np.ndarray):
    """Reference two-pass mean and std over the first axis (weights summing to 1; a
    slightly negative variance from negative Lebedev weights is clamped at zero)."""
    w = weights.reshape((-1,) + (1,) * (values.ndim - 1))
    mean = np.sum(w * values, axis=0)
    variance = np.sum(w * (values - mean) ** 2, axis=0)
    return mean, np.sqrt(np.clip(variance, 0.0, None))


@pytest.mark.parametrize("l_max", [1, 3])
@pytest.mark.parametrize("fixture", ["crystal", "cluster"])
def test_agrees_with_metatomic_ase_symmetrized_calculator(broken_model, fixture, l_max, request):
    from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

    atoms = request.getfixturevalue(fixture)
    ours = atoms.copy()
    ours.calc = SymDiagCalculator(broken_model, symmetrize=f"lebedev:{l_max}", batch_size=32)
    theirs = atoms.copy()
    theirs.calc = SymmetrizedCalculator(MetatomicCalculator(broken_model), l_max=l_max, store_rotational_std=True)
    properties = ["energy", "forces"] + (["stress"] if atoms.pbc.all() else [])
    theirs.calc.calculate(theirs, properties, [])
    reference = theirs.calc.results
    assert ours.get_potential_energy() == pytest.approx(reference["energy"], rel=1e-8)
    scale = np.abs(reference["forces"]).max()
    np.testing.assert_allclose(ours.get_forces(), reference["forces"], atol=1e-8 * scale)
    assert ours.calc.results["energy_std"] == pytest.approx(reference["energy_rot_std"], rel=1e-6)
    np.testing.assert_allclose(ours.calc.results["forces_std"], reference["forces_rot_std"], atol=1e-8 * scale)
    if atoms.pbc.all():
        stress = np.asarray(reference["stress"])
        expected = stress if stress.shape == (6,) else np.array(
            [stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]]
        )
        np.testing.assert_allclose(ours.get_stress(), expected, atol=1e-8 * np.abs(expected).max())
        # the spread: ours is of the Voigt components, theirs per 3x3 entry. The diagonal
        # entries are Voigt components: they agree one-to-one. The virial of an energy
        # that is not rotation invariant is not symmetric ([0, 1] != [1, 0] here), and
        # our off-diagonal spread is that of (s_ij + s_ji) / 2: at most their mean
        spread = np.asarray(reference["stress_rot_std"])
        ours_std = np.asarray(ours.calc.results["stress_std"])
        assert spread.diagonal().min() > 1e-6  # the planted term spreads every component
        np.testing.assert_allclose(ours_std[:3], spread.diagonal(), rtol=1e-6)
        for value, (i, j) in zip(ours_std[3:], [(1, 2), (0, 2), (0, 1)]):
            assert value <= 0.5 * (spread[i, j] + spread[j, i]) * (1 + 1e-9)
            assert value == pytest.approx(spread[i, j], rel=0.1)  # the asymmetry is small


def test_variance_agrees_with_metatomic_symmetrized_model(broken_model, crystal):
    from metatomic.torch import ModelOutput, load_atomistic_model
    from metatomic.torch.o3 import SymmetrizedModel
    from metatomic_ase import MetatomicCalculator

    wrapped = SymmetrizedModel.wrap(load_atomistic_model(broken_model), max_angular_momentum_target=1)
    grid = wrapped.module.max_angular_momentum_grid
    out = MetatomicCalculator(wrapped).run_model(
        crystal,
        {"energy": ModelOutput(sample_kind="system"), "o3::variance::energy": ModelOutput(sample_kind="system")},
    )
    ours = crystal.copy()
    ours.calc = SymDiagCalculator(broken_model, symmetrize=f"grid:{grid}")
    energy = ours.get_potential_energy()
    assert energy == pytest.approx(float(out["energy"].block().values), rel=1e-10)
    variance = float(out["o3::variance::energy"].block().values)
    assert variance > 1e-8
    assert ours.calc.results["energy_std"] ** 2 == pytest.approx(variance, rel=1e-8)


@pytest.mark.parametrize("spec", [2, 3, "O", "I", "lebedev:2"])
def test_symmetrized_model_is_equivariant_to_its_degree(broken_model, cluster, spec):
    """The planted term is pure lambda = 2: any quadrature exact to degree >= 2 removes it."""
    calc = SymDiagCalculator(broken_model, symmetrize=spec)
    quadrature = calc.quadrature
    assert quadrature.degree >= 2
    raw = check_equivariance(broken_model, cluster, n_rotations=3, seed=2)
    assert raw.structures[0].forces.relative > 1e-4
    forces = []
    rotations = np.concatenate([np.eye(3)[None], raw.operations])
    for rotation in rotations:
        moved = cluster.copy()
        moved.positions = cluster.positions @ rotation.T
        moved.calc = calc
        forces.append(moved.get_forces() @ rotation)  # back-rotated
    scale = np.abs(forces[0]).max()
    for f in forces[1:]:
        np.testing.assert_allclose(f, forces[0], atol=1e-10 * scale)


def test_group_average_exact_for_group_operations(broken_model, crystal):
    """Averaged over O_h, outputs are exactly equivariant under O_h's own operations."""
    calc = SymDiagCalculator(broken_model, symmetrize="O")
    crystal.calc = calc
    reference = crystal.get_potential_energy()
    for rotation in group_quadrature("O").rotations[[3, 17, 30]]:
        moved = crystal.copy()
        moved.set_cell(crystal.cell.array @ rotation.T, scale_atoms=False)
        moved.positions = crystal.positions @ rotation.T
        moved.calc = calc
        assert moved.get_potential_energy() == pytest.approx(reference, abs=1e-12)


def test_resolve_quadrature():
    assert resolve_quadrature(None) is None
    assert resolve_quadrature(3).size == 48
    assert resolve_quadrature("lebedev:3").size == 84
    assert resolve_quadrature("I:proper").size == 60
    q = resolve_quadrature(1)
    assert resolve_quadrature(q) is q and isinstance(q, O3Quadrature)
    for bad in [True, "lebedev", "xyz", 2.5, -1, "I+", "lebedev:3:chiral", 1000, "lebedev:1000"]:
        with pytest.raises(SymDiagError, match="quadrature|ambiguous|degree|symmetrize"):
            resolve_quadrature(bad)


@pytest.mark.parametrize(
    "spec, size, improper",
    [(0, 2, True), ("Ci", 2, True), ("C1", 1, False), ("D2", 8, True), ("T", 24, True), ("O", 48, True),
     ("I", 120, True), ("T:proper", 12, False), ("lebedev:2", 60, True), ("grid:3:proper", 24, False)],
)
def test_printed_quadrature_names_are_accepted(spec, size, improper):
    q = resolve_quadrature(spec)
    assert (q.size, q.include_inversion) == (size, improper)
    again = resolve_quadrature(q.name)  # what is printed is accepted and means the same set
    assert again.name == q.name and again.size == q.size
    np.testing.assert_allclose(again.rotations, q.rotations)


def test_float32_symmetrized_matches_float64(broken_model, crystal):
    single, double = crystal.copy(), crystal.copy()
    single.calc = SymDiagCalculator(broken_model, symmetrize="T", dtype="float32")
    double.calc = SymDiagCalculator(broken_model, symmetrize="T")
    np.testing.assert_allclose(single.get_forces(), double.get_forces(), atol=2e-4)
    np.testing.assert_allclose(single.get_stress(), double.get_stress(), atol=1e-5)
    # float32 energies of ~26 eV carry ~2e-6 eV of rounding, against a spread of ~5e-4 eV
    assert single.calc.results["energy_std"] == pytest.approx(double.calc.results["energy_std"], rel=2e-2)


@pytest.mark.parametrize("chunk_atoms", [1, 40, 10_000])
def test_streamed_average_equals_the_stored_samples(broken_model, crystal, chunk_atoms):
    """Chunk-by-chunk running moments (what the calculator uses, memory of one chunk)
    give the mean and spread of the full (K, ...) sample arrays, whatever the chunk
    (1 copy, 1 copy of 32 atoms + remainder, all 48 at once)."""
    from ase_symdiag import ModelHandle
    from ase_symdiag.backends.metatomic.evaluation import chunk_size
    from ase_symdiag.structures import from_atoms
    from ase_symdiag.drivers.symmetrize import symmetrized_prediction

    handle = ModelHandle.load(broken_model)
    structure = from_atoms(crystal)
    q = resolve_quadrature("O")
    stored = symmetrized_prediction(handle, structure, q, energies=True, batch_size=None, chunk_atoms=10**9)
    streamed = symmetrized_prediction(
        handle, structure, q, energies=True, batch_size=None, chunk_atoms=chunk_atoms, keep_samples=False
    )
    assert streamed.samples == {}
    for name, values in stored.samples.items():
        mean, std = weighted_mean_std(values, q.weights)
        np.testing.assert_allclose(streamed.mean[name], mean, rtol=0, atol=1e-12 * max(1.0, np.abs(mean).max()))
        np.testing.assert_allclose(streamed.std[name], std, rtol=1e-6, atol=1e-12)
    assert np.abs(stored.std["forces"]).max() > 1e-4  # the planted breaking spreads the samples


def test_chunk_size_adapts_to_the_structure():
    from ase_symdiag.backends.metatomic.evaluation import CHUNK_ATOMS, chunk_size

    assert chunk_size(32, 84, 16) == 14  # small cells keep large batches, in equal chunks
    assert chunk_size(32, 48, 16) == 16
    assert chunk_size(108, 84, 16) <= min(16, CHUNK_ATOMS // 108)
    assert chunk_size(10_976, 48, 16) == 1  # large ones go one copy at a time
    assert chunk_size(100_000, 48, None) == 1
    assert chunk_size(32, 3, 16) == 3
    with pytest.raises(ValueError, match="batch_size"):
        chunk_size(32, 3, 0)


def test_voigt_stress_spread_differs_from_per_entry_spread_for_asymmetric_stress():
    """metatomic-ase's stress_rot_std is per 3x3 entry; ours (results['stress_std'],
    std['stress:voigt']) is the spread of the Voigt components. An antisymmetric yz
    part that varies with the orientation (an asymmetric virial) is in their [1, 2]
    and [2, 1] but not in our yz; every other component agrees."""
    from metatomic_ase._symmetry import _compute_rotational_average

    from ase_symdiag.o3.transforms import voigt_from_tensor

    quadrature = resolve_quadrature("T")
    R, w = quadrature.rotations, quadrature.weights
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 3))
    symmetric = 1e-3 * rng.normal(size=(quadrature.size, 3, 3))
    symmetric = base + base.T + symmetric + np.swapaxes(symmetric, 1, 2)
    antisymmetric = np.zeros((quadrature.size, 3, 3))
    antisymmetric[:, 1, 2] = 0.01 * rng.normal(size=quadrature.size)
    antisymmetric[:, 2, 1] = -antisymmetric[:, 1, 2]
    for extra in (0.0, 1.0):
        back = symmetric + extra * antisymmetric  # back-rotated samples g(R_k)
        rotated = R @ back @ np.swapaxes(R, 1, 2)  # what a model returned in the rotated frames
        theirs = _compute_rotational_average({"stress": rotated}, R, w, True)["stress_rot_std"]
        _, ours = weighted_mean_std(voigt_from_tensor(back), w)
        mapped = np.array([theirs[0, 0], theirs[1, 1], theirs[2, 2], theirs[1, 2], theirs[0, 2], theirs[0, 1]])
        np.testing.assert_allclose(ours[[0, 1, 2, 4, 5]], mapped[[0, 1, 2, 4, 5]], rtol=1e-10)
        _, symmetric_yz = weighted_mean_std(symmetric[:, 1, 2], w)
        assert ours[3] == pytest.approx(symmetric_yz, rel=1e-10)
        if extra == 0.0:
            assert ours[3] == pytest.approx(mapped[3], rel=1e-10)
        else:  # the antisymmetric fluctuation is in theirs only
            assert min(theirs[1, 2], theirs[2, 1]) > 5 * ours[3]


def test_calculator_stress_std_is_the_voigt_spread(broken_model, crystal):
    from ase_symdiag import ModelHandle
    from ase_symdiag.drivers.symmetrize import symmetrized_prediction
    from ase_symdiag.o3.transforms import voigt_from_tensor
    from ase_symdiag.structures import from_atoms

    crystal.calc = SymDiagCalculator(broken_model, symmetrize="T")
    crystal.get_stress()
    prediction = symmetrized_prediction(ModelHandle.load(broken_model), from_atoms(crystal), resolve_quadrature("T"))
    _, expected = weighted_mean_std(voigt_from_tensor(prediction.samples["stress"]), prediction.quadrature.weights)
    np.testing.assert_allclose(prediction.std["stress:voigt"], expected, rtol=1e-8)
    np.testing.assert_allclose(crystal.calc.results["stress_std"], expected, rtol=1e-8)
