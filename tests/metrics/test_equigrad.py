"""Equigrad, dE/dθ under an infinitesimal rotation (docs/methods.md §8)."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from family_models import ORB_NUMPY_WARNING

from ase_symdiag.drivers.equigrad import equigrad, structure_equigrad
from ase_symdiag.metrics.equigrad import axis_rotations, central_difference, from_forces, from_rotational_grad
from ase_symdiag.structures import from_atoms


@pytest.fixture
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=4)
    return atoms


def test_axis_rotations_turn_about_x_y_z_by_plus_and_minus_step():
    step = 0.1
    rotations = axis_rotations(step)
    assert rotations.shape == (6, 3, 3)
    for index, axis in enumerate(np.eye(3)):
        plus, minus = rotations[2 * index], rotations[2 * index + 1]
        np.testing.assert_allclose(plus @ minus, np.eye(3), atol=1e-15)
        np.testing.assert_allclose(plus @ axis, axis, atol=1e-15)
        assert np.linalg.det(plus) == pytest.approx(1.0)
        assert np.trace(plus) == pytest.approx(1 + 2 * np.cos(step))
    # right-handed: +step about z turns x towards y
    assert rotations[4] @ np.array([1.0, 0, 0]) @ np.array([0, 1.0, 0]) == pytest.approx(np.sin(step))


def test_central_difference_of_an_analytic_energy():
    """E(R x) = a . (R u) for a fixed vector u: dE/dθ_n = a . (n × u) = n . (u × a)."""
    a, u = np.array([0.3, -1.2, 0.7]), np.array([1.1, 0.4, -0.5])
    step = 1e-4
    energies = [a @ (rotation @ u) for rotation in axis_rotations(step)]
    np.testing.assert_allclose(central_difference(energies, step), np.cross(u, a), rtol=1e-7)


def test_rotational_grad_convention():
    """orb's G = M - M^T for x -> x exp(G - G^T); e_c = ε_cab M_ab = (G_12, G_20, G_01)."""
    rng = np.random.default_rng(0)
    vectors, gradients = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    virial = vectors.T @ gradients  # M_ab = Σ_k v_ka g_kb
    expected = np.cross(vectors, gradients).sum(axis=0)
    np.testing.assert_allclose(from_rotational_grad(virial - virial.T), expected, atol=1e-12)
    np.testing.assert_allclose(from_forces(vectors, -gradients), expected, atol=1e-12)


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_equals_orbs_own_rotational_grad_on_a_conservative_orb(ethanol, crystal):
    """Our e (autograd through the adapter, and -Σ x × F from orb's own conservative
    forces on a molecule) equals Orb's rotational_grad after G -> (G_12, G_20, G_01)."""
    pytest.importorskip("orb_models")
    from family_models import small_orb

    model = small_orb("conservative")
    for atoms in (ethanol, crystal):
        structure = from_atoms(atoms, label=atoms.get_chemical_formula())
        ours = structure_equigrad(model, structure)
        assert ours.method == "autograd"
        batch = model.graphs(_one_state(model, atoms))
        with torch.enable_grad():
            own = model.model.predict(batch)["rotational_grad"][0].detach().numpy()
        np.testing.assert_allclose(ours.vector, from_rotational_grad(own), rtol=1e-10, atol=1e-12)
        assert ours.norm > 1e-4  # random weights: not invariant
        if not atoms.pbc.any():
            forces = model(_one_state(model, atoms))["forces"].numpy()
            positions = model.graphs(_one_state(model, atoms)).node_features["positions"].numpy()
            np.testing.assert_allclose(ours.vector, from_forces(positions, forces), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
@pytest.mark.parametrize("kind", ["direct", "conservative"])
def test_finite_differences_agree_with_autograd(kind, crystal):
    pytest.importorskip("orb_models")
    from family_models import small_orb

    model = small_orb(kind)
    structure = from_atoms(crystal, label="crystal")
    exact = structure_equigrad(model, structure, method="autograd")
    estimate = structure_equigrad(model, structure, method="finite-difference", step=1e-3)
    assert estimate.method == "finite-difference" and estimate.step == 1e-3
    np.testing.assert_allclose(estimate.vector, exact.vector, rtol=1e-5, atol=1e-8 * exact.norm)


def test_invariant_model_has_none_and_a_planted_breaking_has_some(equivariant_model, broken_model, crystal, cluster):
    """An exactly invariant metatomic model: e at round-off; the planted lambda=2 term: not."""
    exact = equigrad(equivariant_model, [crystal, cluster])
    assert [r.method for r in exact] == ["finite-difference"] * 2
    assert max(r.norm for r in exact) < 1e-7
    broken = equigrad(broken_model, [crystal, cluster])
    assert min(r.norm for r in broken) > 1e-4


def test_bad_method_and_step_are_usage_errors(equivariant_model, crystal):
    from ase_symdiag.errors import UsageError

    structure = from_atoms(crystal)
    with pytest.raises(UsageError, match="method"):
        structure_equigrad(equivariant_model, structure, method="analytic")
    with pytest.raises(UsageError, match="no autograd"):
        structure_equigrad(equivariant_model, structure, method="autograd")
    with pytest.raises(UsageError, match="step"):
        structure_equigrad(equivariant_model, structure, step=-1.0)


def _one_state(model, atoms):
    import torch_sim as ts

    return ts.io.atoms_to_state([atoms], device=model.device, dtype=model.dtype)
