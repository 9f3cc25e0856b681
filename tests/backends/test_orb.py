"""The batched Orb-v3 adapter (orb-models 0.5.0) on small random-weight architectures."""

import numpy as np
import pytest
import torch
from ase.build import molecule

pytest.importorskip("orb_models")
pytest.importorskip("torch_sim")

from family_models import ORB_NUMPY_WARNING, small_orb, small_orb_regressor  # noqa: E402


@pytest.fixture
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=4)
    return atoms


def _state(atoms_list):
    import torch_sim as ts

    return ts.io.atoms_to_state(atoms_list, device=torch.device("cpu"), dtype=torch.float64)


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
@pytest.mark.parametrize("kind", ["direct", "conservative"])
@pytest.mark.parametrize("which", ["crystal", "ethanol"])
def test_batch_equals_orb_calculator_one_structure_at_a_time(kind, which, request):
    """One batched call over two different systems == ORBCalculator on each (float64)."""
    from orb_models.forcefield.calculator import ORBCalculator

    atoms = request.getfixturevalue(which)
    other = atoms.copy()
    other.rattle(0.05, seed=9)
    model = small_orb(kind)
    out = model(_state([atoms, other]))
    calculator = ORBCalculator(small_orb_regressor(kind), device="cpu")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # ORBCalculator builds its graph in the default dtype
    try:
        for index, item in enumerate([atoms, other]):
            item = item.copy()
            item.calc = calculator
            rows = slice(index * len(atoms), (index + 1) * len(atoms))
            assert out["energy"][index].item() == pytest.approx(item.get_potential_energy(), rel=1e-10)
            np.testing.assert_allclose(out["forces"][rows].numpy(), item.get_forces(), atol=1e-9)
            if item.pbc.all():
                np.testing.assert_allclose(out["stress"][index].numpy(), item.get_stress(voigt=False), atol=1e-10)
    finally:
        torch.set_default_dtype(previous)
    assert out["forces"].shape == (2 * len(atoms), 3) and out["stress"].shape == (2, 3, 3)


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_random_orb_is_found_breaking(crystal, ethanol):
    """Random Orb-v3 (direct heads, no built-in symmetry) breaks O(3): the check sees it
    on forces and stress, and the spectrum puts non-zero power in breaking channels."""
    from ase_symdiag.drivers.equivariance import check_equivariance
    from ase_symdiag.drivers.spectrum import structure_spectrum
    from ase_symdiag.structures import from_atoms

    model = small_orb("direct")
    report = check_equivariance(model, [crystal, ethanol], n_rotations=4)
    summary = report.summary()
    assert summary["force_rms_per_component_relative"] > 1e-3
    assert summary["stress_max_GPa"] > 1e-3
    spectrum, _ = structure_spectrum(model, from_atoms(ethanol, label="ethanol"), lmax=2, n_check=0)
    forces = spectrum.outputs["forces"]
    breaking = sum(p for channel, p in forces.power.items() if channel != (0, 1))
    assert breaking > 1e-6 * forces.mean_square


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
@pytest.mark.parametrize("degree", [1, 2])
def test_averaged_orb_is_equivariant_up_to_its_degree(degree):
    """Averaging random Orb over a quadrature exact to ``degree`` leaves no breaking in
    the channels l <= degree (round-off), where the raw model has plenty."""
    from ase_symdiag.drivers.spectrum import structure_spectrum
    from ase_symdiag.md.torchsim_models import SymmetrizedModel
    from ase_symdiag.structures import from_atoms

    water = molecule("H2O")
    water.rattle(0.05, seed=6)
    structure = from_atoms(water, label="water")
    raw = small_orb("direct")
    averaged = SymmetrizedModel(raw, degree)

    def low_channels(model):
        spectrum, _ = structure_spectrum(model, structure, lmax=degree, n_check=0)
        forces = spectrum.outputs["forces"]
        power = sum(p for (l, sigma), p in forces.power.items() if (l, sigma) != (0, 1) and l <= degree)
        return power / forces.mean_square

    assert low_channels(raw) > 1e-6
    assert low_channels(averaged) < 1e-20


def test_float64_neighbour_search_keeps_exact_models_exact(crystal):
    """The graph is built in the model's dtype: a float64 model sees the same neighbours
    in every rotated copy (the float32 default drops/adds edges at the cutoff)."""
    model = small_orb("direct")
    batch = model.graphs(_state([crystal]))
    assert batch.edge_features["vectors"].dtype == torch.float64


def test_bad_inputs_are_model_errors():
    from ase_symdiag.backends.orb import OrbModel, build_architecture
    from ase_symdiag.errors import ModelError

    with pytest.raises(ModelError, match="expected an orb-models forcefield regressor"):
        OrbModel(torch.nn.Linear(2, 2))
    with pytest.raises(ModelError, match="direct Orb model"):
        OrbModel(small_orb_regressor("direct"), conservative=True)
    with pytest.raises(ModelError, match="unknown Orb architecture"):
        build_architecture("orb-v9")
    with pytest.raises(ModelError, match="bad architecture argument"):
        build_architecture("orb-v3-direct", latent_dims=3)


def test_sizes_are_read_back_from_a_state_dict():
    from ase_symdiag.backends.orb import architecture_sizes
    from family_models import ORB_SIZES

    sizes = architecture_sizes(small_orb_regressor("conservative").state_dict())
    assert sizes == {**ORB_SIZES, "base_mlp_depth": 2, "head_mlp_depth": 1}


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_batched_path_equals_the_per_rotation_ase_path(crystal, ethanol):
    """The same check through our batched adapter and through ORBCalculator one
    rotation at a time (orb's own ASE route) gives the same errors per operation."""
    from orb_models.forcefield.calculator import ORBCalculator

    from ase_symdiag.drivers.equivariance import check_equivariance

    batched = check_equivariance(small_orb("direct"), [crystal, ethanol], n_rotations=3)
    calculator = ORBCalculator(small_orb_regressor("direct"), device="cpu")  # same seed, same weights
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # ORBCalculator builds its graph in the default dtype
    try:
        one_by_one = check_equivariance(calculator, [crystal, ethanol], n_rotations=3)
    finally:
        torch.set_default_dtype(previous)
    for a, b in zip(batched.structures, one_by_one.structures):
        np.testing.assert_allclose(a.per_operation_energy, b.per_operation_energy, atol=1e-9)
        np.testing.assert_allclose(a.forces.per_operation_rms_per_component, b.forces.per_operation_rms_per_component, rtol=1e-7)
        assert a.forces.rms_per_component > 1e-4  # a real breaking, compared above


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_the_real_size_architecture_is_found_breaking(ethanol):
    """orb_v3_direct_architecture() at its real size (25.6 M random weights), float32."""
    from ase_symdiag.drivers.equivariance import check_equivariance
    from ase_symdiag.backends.orb import OrbModel, build_architecture

    torch.manual_seed(0)
    regressor = build_architecture("orb-v3-direct")
    assert sum(p.numel() for p in regressor.parameters()) > 25e6
    report = check_equivariance(OrbModel(regressor, dtype=torch.float32), ethanol, n_rotations=2)
    assert report.summary()["force_rms_per_component_relative"] > 1e-3
