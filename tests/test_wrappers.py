"""Symmetrized, corrected and stochastic versions of ANY model: the TorchSim wrappers
(ase_symdiag.md.torchsim_models) and the ASE calculator (ase_symdiag.wrappers)."""

import numpy as np
import pytest
import torch

pytest.importorskip("torch_sim")

import torch_sim as ts  # noqa: E402

import ase_symdiag  # noqa: E402
from ase_symdiag.backends.torchsim import torchsim_predictions  # noqa: E402
from ase_symdiag.md.torchsim_models import (  # noqa: E402
    CorrectedModel,
    ChunkedModel,
    FiniteModel,
    StochasticRotationModel,
    SymmetrizedModel,
    build_variant,
)
from ase_symdiag.wrappers import SymmetrizedCalculator  # noqa: E402
from family_models import ORB_NUMPY_WARNING  # noqa: E402
from torchsim_planted import OneSystemCalculator, PlantedModel, lennard_jones  # noqa: E402

#: planted lambda = 1 (odd) amplitude, eV/Å, and lambda = 0 + 2 (even) amplitude, eV/Å^2
A, B = 0.02, 0.01


@pytest.fixture(scope="module")
def planted():
    return PlantedModel(lennard_jones(), a=A, b=B)


def _check(model, atoms):
    return ase_symdiag.check_equivariance(model, atoms, n_rotations=6, seed=4).summary()


@pytest.mark.parametrize("fixture", ["crystal", "cluster"])
def test_symmetrized_model_is_equivariant_to_round_off_up_to_its_degree(planted, fixture, request):
    """Degree 2 removes both planted terms (lambda <= 2): round-off. The inversion
    alone (Ci) removes only the odd lambda = 1 term: what is left is exactly the
    breaking of the b term alone."""
    atoms = request.getfixturevalue(fixture)
    assert _check(planted, atoms)["force_rms_per_component_eV_per_A"] > 1e-3
    exact = _check(SymmetrizedModel(planted, 2), atoms)
    assert exact["energy_max_eV"] < 1e-11 and exact["force_rms_per_component_eV_per_A"] < 1e-12
    if atoms.pbc.all():
        assert exact["stress_max_GPa"] < 1e-9
    inversion = ase_symdiag.check_equivariance(SymmetrizedModel(planted, "Ci"), atoms, n_rotations=6, seed=4)
    even_only = ase_symdiag.check_equivariance(PlantedModel(lennard_jones(), b=B), atoms, n_rotations=6, seed=4)
    np.testing.assert_allclose(inversion.structures[0].per_operation_energy,
                               even_only.structures[0].per_operation_energy, rtol=1e-9, atol=1e-12)
    assert even_only.summary()["energy_max_eV"] > 1e-3


def test_symmetrized_model_equals_the_in_process_average_for_every_system_of_a_batch(planted, crystal, cluster):
    """Two different systems in one state, the quadrature split into chunks: each
    system's average equals the library's average of that structure alone."""
    from ase_symdiag.drivers.symmetrize import symmetrized_prediction
    from ase_symdiag.o3.quadrature import resolve_quadrature
    from ase_symdiag.structures import from_atoms

    quadrature = resolve_quadrature(3)
    wrapped = SymmetrizedModel(planted, quadrature, batch_size=5)
    images = [crystal, crystal.copy()]
    images[1].rattle(0.1, seed=9)
    out = wrapped(ts.io.atoms_to_state(images, torch.device("cpu"), torch.float64))
    for k, atoms in enumerate(images):
        expected = symmetrized_prediction(planted, from_atoms(atoms), quadrature, keep_samples=False).mean
        assert float(out["energy"][k]) == pytest.approx(expected["energy"], rel=1e-12)
        forces = out["forces"][k * len(crystal):(k + 1) * len(crystal)].numpy()
        np.testing.assert_allclose(forces, expected["forces"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["stress"][k].numpy(), expected["stress"], rtol=0, atol=1e-12)


def test_corrected_model_has_zero_net_force_and_torque_on_a_molecule(planted, cluster):
    raw = torchsim_predictions(planted, cluster)
    corrected = torchsim_predictions(CorrectedModel(planted), cluster)
    r = cluster.positions - cluster.positions.mean(axis=0)

    def net(forces):
        return np.abs(forces.sum(axis=0)).max(), np.abs(np.cross(r, forces).sum(axis=0)).max()

    assert min(net(raw.forces[0])) > 1e-3  # the planted terms push and twist the cluster
    assert max(net(corrected.forces[0])) < 1e-12
    assert corrected.energy[0] == raw.energy[0]


def test_stochastic_model_returns_the_back_rotated_outputs_of_its_rotation(planted, cluster):
    model = StochasticRotationModel(planted, seed=3)
    state = ts.io.atoms_to_state([cluster, cluster], torch.device("cpu"), torch.float64)
    out = model(state)
    rotations = model.last_rotations.numpy()
    assert not np.allclose(rotations[0], rotations[1])
    rotated = torchsim_predictions(planted, cluster, rotations)
    np.testing.assert_allclose(out["energy"].numpy(), rotated.energy, rtol=1e-12)
    back = np.einsum("kni,kij->knj", rotated.forces, rotations)  # F(Rx) R
    np.testing.assert_allclose(out["forces"].numpy().reshape(2, -1, 3), back, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind, cls", [("raw", ChunkedModel), ("symmetrized", SymmetrizedModel),
                                        ("corrected", CorrectedModel), ("stochastic", StochasticRotationModel)])
def test_build_variant_wraps_any_torchsim_model(planted, cluster, kind, cls):
    model, description = build_variant(kind, planted, cluster, symmetrize="O")
    assert isinstance(model, cls) and description.startswith(kind)
    assert not model.compute_stress  # a finite cluster: no stress over zero volume
    if kind == "raw":  # replicas evaluated in bounded groups, each without a stress
        assert isinstance(model.inner, FiniteModel)
    out = model(ts.io.atoms_to_state(cluster, torch.device("cpu"), torch.float64))
    assert "stress" not in out and torch.isfinite(out["forces"]).all()
    if kind == "symmetrized":
        assert model.quadrature.name == "Oh" and "Oh, 48 ops" in description


def test_symmetrized_calculator_wraps_an_ase_calculator_and_a_torchsim_model_alike(planted, crystal):
    """The per-rotation path (inner ASE calculator) and the batched one (inner TorchSim
    model) give the same averaged results, equivariant to round-off."""
    per_rotation = SymmetrizedCalculator(OneSystemCalculator(planted), symmetrize=2)
    batched = SymmetrizedCalculator(planted, symmetrize=2)
    results = []
    for calc in (per_rotation, batched):
        atoms = crystal.copy()
        atoms.calc = calc
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(), calc.results["forces_std"]))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
    assert results[0][3].max() > 1e-3  # the spread shows the breaking that was averaged out
    report = ase_symdiag.check_equivariance(batched, crystal, n_rotations=4, seed=2)
    s = report.summary()
    assert report.model == batched.description and report.model.startswith("PlantedModel [symmetrize=")
    # the calculator returns Voigt (symmetrized) stress, so stress is checked too
    assert s["energy_max_eV"] < 1e-11 and s["force_rms_per_component_eV_per_A"] < 1e-12 and s["stress_max_GPa"] < 1e-9


def test_symmetrized_calculator_corrections_on_a_molecule(planted, cluster):
    atoms = cluster.copy()
    atoms.calc = SymmetrizedCalculator(OneSystemCalculator(planted), corrections=["net_force", "net_torque"])
    forces = atoms.get_forces()
    r = atoms.positions - atoms.positions.mean(axis=0)
    assert np.abs(forces.sum(axis=0)).max() < 1e-12 and np.abs(np.cross(r, forces).sum(axis=0)).max() < 1e-12
    assert np.abs(forces - OneSystemCalculator(planted).get_forces(cluster.copy())).max() > 1e-3
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError, match="periodic in all directions"):
        atoms.get_stress()


def test_symmetrized_calculator_refuses_typos_and_unknown_models(planted):
    from ase_symdiag.errors import ModelError

    with pytest.raises(TypeError):
        SymmetrizedCalculator(planted, symmetrise=3)
    with pytest.raises(ModelError, match="TorchSim ModelInterface or an ASE calculator, got int"):
        SymmetrizedCalculator(42)


# orb-models 0.5.0's ORBCalculator hands numpy an object without the copy keyword (its code, not ours)
@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_symmetrized_calculator_wraps_orbs_own_ase_calculator(crystal):
    """metatomic-ase's SymmetrizedCalculator cannot wrap ORBCalculator; this one can,
    one call per operation, and gives the batched average of the same network through
    the Orb TorchSim adapter (float32: ORBCalculator builds graphs in float32)."""
    pytest.importorskip("orb_models")
    from ase_symdiag.backends.orb import OrbModel
    from family_models import orb_calculator, small_orb_regressor

    results = []
    for inner in (orb_calculator(), OrbModel(small_orb_regressor("direct").float(), dtype=torch.float32)):
        atoms = crystal.copy()
        atoms.calc = SymmetrizedCalculator(inner, symmetrize=1, corrections=["net_force"])  # D2h, 8 ops
        results.append((atoms.get_potential_energy(), atoms.get_forces()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    scale = np.abs(results[1][1]).max()
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=0, atol=2e-3 * scale)  # float32 round-off
    assert np.abs(results[0][1].sum(axis=0)).max() < 1e-5 * scale  # net force removed


@pytest.mark.parametrize("chunk_atoms, sizes", [(None, [312, 312]), (64, [52] * 12), (130, [130] * 4 + [104])])
def test_symmetrized_model_bounds_the_atoms_per_inner_call(planted, cluster, chunk_atoms, sizes):
    """Two 13-atom systems (26 atoms per operation) x 24 operations: chunks of
    ``chunk_atoms // 26`` operations (default budget 512: 19, evened out to 2 x 12),
    and the same average whatever the chunking."""
    from ase_symdiag.o3.quadrature import resolve_quadrature

    seen = []

    class Counting(PlantedModel):
        def forward(self, state, **kwargs):
            seen.append(state.n_atoms)
            return super().forward(state)

    inner = Counting(planted.inner, a=A, b=B)
    quadrature = resolve_quadrature(2)
    state = ts.io.atoms_to_state([cluster, cluster], torch.device("cpu"), torch.float64)
    bounded = SymmetrizedModel(inner, quadrature, batch_size=None, chunk_atoms=chunk_atoms)(state)
    assert seen == sizes
    whole = SymmetrizedModel(planted, quadrature, batch_size=None, chunk_atoms=10**6)(state)
    np.testing.assert_allclose(bounded["forces"].numpy(), whole["forces"].numpy(), rtol=0, atol=1e-12)


def test_wrapped_ase_calculator_sees_the_atoms_info_and_arrays(cluster):
    """A calculator that reads ``atoms.info["charge"]`` and per-atom ``initial_charges``
    (as charge-aware models do) gets them on every rotated copy."""
    from ase.calculators.calculator import Calculator, all_changes

    class ChargeAware(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            charges = self.atoms.get_initial_charges()
            self.results = {"energy": float(self.atoms.info["charge"]) + float(charges @ charges),
                            "forces": np.zeros((len(self.atoms), 3))}

    atoms = cluster.copy()
    atoms.info["charge"] = -1.5
    atoms.set_initial_charges(np.linspace(-0.2, 0.3, len(atoms)))
    atoms.calc = SymmetrizedCalculator(ChargeAware(), symmetrize=2)
    expected = -1.5 + float(atoms.get_initial_charges() @ atoms.get_initial_charges())
    assert atoms.get_potential_energy() == pytest.approx(expected, rel=1e-12)
    assert atoms.calc.results["energy_std"] < 1e-12
