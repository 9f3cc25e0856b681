"""backends/strain.py: the strain and virial path, scriptable, against finite differences."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.neighborlist import neighbor_list

from ase_symdiag.backends import strain as strain_module
from ase_symdiag.backends.strain import (
    apply_strain, identity_strain, pair_vectors, strain_gradient, stress_from_strain_gradient,
)

#: a fixed direction: the planted energy sum_pairs a . d is not rotation invariant
PLANTED = (0.3, -0.2, 0.5)


@pytest.fixture
def crystal():
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    first, second, shifts = neighbor_list("ijS", atoms, 3.0)
    half = first < second  # each pair once: the planted sum_pairs d does not cancel
    first, second, shifts = first[half], second[half], shifts[half]
    return (atoms, torch.tensor(first, dtype=torch.long), torch.tensor(second, dtype=torch.long),
            torch.tensor(shifts, dtype=torch.float64))


def _energy(vectors: torch.Tensor) -> torch.Tensor:
    """An invariant pair energy plus the planted term ``sum_pairs a . d`` (eV, d in Å)."""
    r = torch.linalg.norm(vectors, dim=-1)
    return ((r - 2.5) ** 2).sum() + (vectors @ torch.tensor(PLANTED, dtype=vectors.dtype)).sum()


def _strained_energy(atoms, first, second, shifts, eps: np.ndarray) -> float:
    positions, cell = apply_strain(torch.tensor(atoms.positions), torch.tensor(atoms.cell[:]), torch.tensor(eps))
    return float(_energy(pair_vectors(positions, first, second, shifts, cell)))


@pytest.mark.parametrize("name", strain_module.__all__)
def test_every_function_is_scriptable(name):
    torch.jit.script(getattr(strain_module, name))


def test_stress_is_the_strain_derivative_over_the_volume(crystal):
    """Autograd through a strain leaf, the virial identity and central finite
    differences of E(x eps, cell eps) give one stress; symmetrize=False keeps the
    planted antisymmetric part sum_pairs d (x) a / V, symmetrize=True removes it."""
    atoms, first, second, shifts = crystal
    positions = torch.tensor(atoms.positions).requires_grad_(True)
    cell = torch.tensor(atoms.cell[:]).requires_grad_(True)
    strain = identity_strain(1, torch.float64, torch.device("cpu"))
    strained, strained_cell = apply_strain(positions, cell, strain)
    vectors = pair_vectors(strained, first, second, shifts, strained_cell)[0]
    grads = torch.autograd.grad(_energy(vectors), [strain, positions, cell])
    volume = torch.tensor(atoms.get_volume())
    raw = stress_from_strain_gradient(grads[0], volume, False)[0]

    h, numeric = 1e-6, np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            step = np.zeros((3, 3))
            step[a, b] = h
            up = _strained_energy(atoms, first, second, shifts, np.eye(3) + step)
            down = _strained_energy(atoms, first, second, shifts, np.eye(3) - step)
            numeric[a, b] = (up - down) / (2 * h) / atoms.get_volume()
    np.testing.assert_allclose(raw.numpy(), numeric, atol=1e-7)

    # the virial identity from the gradients of positions and cell (the export's path)
    virial = strain_gradient([positions.detach(), cell.detach()], [grads[1], grads[2]])
    np.testing.assert_allclose(stress_from_strain_gradient(virial, volume, False).numpy(), raw.numpy(), atol=1e-12)

    d = pair_vectors(torch.tensor(atoms.positions), first, second, shifts, torch.tensor(atoms.cell[:])).numpy()
    planted = np.outer(d.sum(axis=0), PLANTED) / atoms.get_volume()
    antisymmetric = 0.5 * (raw.numpy() - raw.numpy().T)
    np.testing.assert_allclose(antisymmetric, 0.5 * (planted - planted.T), atol=1e-12)
    assert np.abs(antisymmetric).max() > 1e-3
    symmetric = stress_from_strain_gradient(grads[0], volume, True)[0].numpy()
    np.testing.assert_allclose(symmetric, 0.5 * (raw.numpy() + raw.numpy().T), atol=1e-14)
