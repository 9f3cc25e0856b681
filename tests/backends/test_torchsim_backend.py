"""The batched backend over any TorchSim ModelInterface, and every metric run through it."""

import numpy as np
import pytest

from ase_symdiag.backends.torchsim import torchsim_chunks, torchsim_predictions
from ase_symdiag.errors import ModelEvaluationError
from ase_symdiag.o3.operations import haar_rotations
from ase_symdiag.structures import from_atoms
from torchsim_planted import OneSystemCalculator, PlantedModel, lennard_jones

#: amplitude of the planted lambda = 1 energy term, eV/Å
A = 0.02


@pytest.fixture(scope="module")
def equivariant():
    return lennard_jones()


@pytest.fixture(scope="module")
def planted():
    return PlantedModel(lennard_jones(), a=A)


@pytest.mark.parametrize("fixture", ["crystal", "triclinic", "cluster", "slab"])
def test_equivariant_torchsim_model_passes_at_round_off(equivariant, fixture, request):
    import ase_symdiag

    atoms = request.getfixturevalue(fixture)
    report = ase_symdiag.check_equivariance(equivariant, atoms, n_rotations=6, seed=3)
    s = report.summary()
    assert report.model == "LennardJonesModel" and report.dtype == "float64"
    assert s["energy_max_eV"] < 1e-11
    assert s["force_rms_per_component_eV_per_A"] < 1e-12
    assert s["stress_max_GPa"] is None or s["stress_max_GPa"] < 1e-9
    assert (s["stress_max_GPa"] is not None) == bool(atoms.pbc.all())


@pytest.mark.parametrize("fixture", ["crystal", "cluster"])
def test_planted_breaking_found_with_its_planted_size(planted, fixture, request):
    from ase_symdiag.drivers.equivariance import check_equivariance

    atoms = request.getfixturevalue(fixture)
    report = check_equivariance(planted, atoms, n_rotations=6, seed=1)
    operations = report.operations
    axis = np.array([0.0, 0.0, 1.0])
    total = atoms.positions.sum(axis=0)
    # E(Rx) - E(x) = a e.(R S - S);  F_i(Rx) - R F_i(x) = a (R e - e) for every atom
    expected_energy = A * ((operations @ total) - total) @ axis
    expected_force_rms = A * np.linalg.norm(operations @ axis - axis, axis=1) / np.sqrt(3)
    errors = report.structures[0]
    np.testing.assert_allclose(errors.per_operation_energy, expected_energy, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(errors.forces.per_operation_rms_per_component, expected_force_rms, rtol=1e-9)
    assert errors.forces.rms_per_component > 1e-3


def test_batched_path_equals_per_rotation_ase_path(planted, crystal):
    from ase_symdiag.backends.ase import calculator_predictions

    rotations = np.concatenate([np.eye(3)[None], haar_rotations(7, 2)])
    batched = torchsim_predictions(planted, crystal, rotations, batch_size=3)
    reference = calculator_predictions(OneSystemCalculator(planted), crystal, rotations)
    np.testing.assert_allclose(batched.energy, reference.energy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(batched.forces, reference.forces, rtol=0, atol=1e-12)
    # ASE's Voigt stress keeps the symmetric part of the planted (asymmetric) virial
    symmetric = (batched.stress + batched.stress.transpose(0, 2, 1)) / 2
    np.testing.assert_allclose(symmetric, reference.stress, rtol=0, atol=1e-12)
    assert np.ptp(batched.energy) > 1e-3  # the planted term is visible in both


@pytest.mark.parametrize("chunk_atoms, expected", [(None, [(0, 9)]), (64, [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]),
                                                   (1, [(k, k + 1) for k in range(9)])])
def test_copies_go_through_the_model_in_chunks_bounded_by_the_atom_budget(planted, crystal, chunk_atoms, expected):
    calls = []

    class Counting(PlantedModel):
        def forward(self, state, **kwargs):
            calls.append(state.n_atoms)
            return super().forward(state)

    model = Counting(planted.inner, a=A)
    rotations = haar_rotations(9, 0)
    structure = from_atoms(crystal, label="cu")
    chunks = list(torchsim_chunks(model, structure, rotations, chunk_atoms=chunk_atoms))
    assert [(start, stop) for start, stop, _ in chunks] == expected
    assert max(calls) <= max(len(crystal), chunk_atoms or 512)
    joined = np.concatenate([chunk["forces"] for _, _, chunk in chunks])
    whole = torchsim_predictions(planted, structure, rotations).forces
    np.testing.assert_allclose(joined, whole, rtol=0, atol=1e-12)


def test_non_finite_output_is_an_error_naming_the_structure(crystal):
    import torch

    class Broken(PlantedModel):
        def forward(self, state, **kwargs):
            out = super().forward(state)
            out["forces"] = out["forces"].clone()
            out["forces"][3] = torch.nan
            return out

    with pytest.raises(ModelEvaluationError, match=r"non-finite values for cu32: forces \(NaN.*atoms \[3\]"):
        torchsim_predictions(Broken(lennard_jones()), crystal, label="cu32")


def test_model_exception_is_one_line_model_evaluation_error(crystal):
    class Failing(PlantedModel):
        def forward(self, state, **kwargs):
            raise RuntimeError("Traceback ...\nkernel exploded\n")

    with pytest.raises(ModelEvaluationError, match=r"^model 'Failing' failed on Cu32 \(pbc=\[True, True, True\]\): kernel exploded$"):
        torchsim_predictions(Failing(lennard_jones()), crystal)


def test_spectrum_of_planted_term_has_its_planted_power(planted, cluster):
    """g(R) = E(x) + a e.R S: all breaking in (1, -), power a^2 |S|^2 / 3; forces
    g_i(R) = F_i(x) - a R^T e: power a^2 per atom (summed over x, y, z)."""
    import ase_symdiag

    spectrum, _ = ase_symdiag.structure_spectrum(planted, cluster, lmax=2, n_check=8)  # ase.Atoms taken as is
    assert spectrum.label == cluster.get_chemical_formula()
    total = cluster.positions.sum(axis=0)
    energy, forces = spectrum.outputs["energy"], spectrum.outputs["forces"]
    assert energy.power[(1, -1)] == pytest.approx(A**2 * total @ total / 3, rel=1e-9)
    assert forces.power[(1, -1)] == pytest.approx(A**2, rel=1e-9)
    for out in (energy, forces):
        assert sum(out.breaking.values()) == pytest.approx(out.power[(1, -1)], rel=1e-9)
        assert out.unresolved < 1e-12 * out.variance


@pytest.mark.parametrize("b, cheapest", [(0.0, "Ci"), (0.01, None)])
def test_adaptive_choice_on_a_torchsim_model(cluster, b, cheapest):
    """A lambda = 1 odd-parity term alone is removed by the inversion (Ci, 2 ops); an
    added lambda = 2 even term needs a quadrature exact to degree 2."""
    from ase_symdiag.metrics.adaptive import choose_quadrature
    from ase_symdiag.drivers.spectrum import structure_spectrum

    model = PlantedModel(lennard_jones(), a=A, b=b)
    spectrum, _ = structure_spectrum(model, from_atoms(cluster), lmax=2, n_check=4)
    choice = choose_quadrature([spectrum], tolerance=1e-6, energy_tolerance=1e-6)
    assert choice.met and choice.outputs["forces"].residual < 1e-6
    if cheapest:
        assert choice.quadrature.name == cheapest
    else:
        assert choice.quadrature.degree >= 2
