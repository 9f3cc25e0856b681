"""backends/rigid.py: net force and net torque removal in torch, batched and scriptable,
the same definition as the numpy corrections NetForce and NetTorque."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from ase_symdiag.backends.rigid import remove_net_force, remove_net_torque, symmetric_solve
from ase_symdiag.corrections import NetForce, NetTorque, net_force, net_torque
from ase_symdiag.structures import from_atoms


def _systems():
    """A rattled cluster, a rotated linear molecule (singular inertia) and a single atom."""
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    co2 = molecule("CO2")
    co2.rotate(37, "x", center="COM")
    return [ethanol, co2, molecule("H")]


@pytest.mark.parametrize("weighting", ["uniform", "mass"])
@pytest.mark.parametrize("scripted", [False, True])
def test_torch_batch_matches_numpy_corrections(weighting, scripted):
    """All systems in one batch give, system by system, NetForce then NetTorque's forces."""
    rng = np.random.default_rng(0)
    systems = _systems()
    raw = [rng.normal(size=(len(atoms), 3)) for atoms in systems]
    expected = []
    for atoms, forces in zip(systems, raw):
        masses = atoms.get_masses()
        out = {"energy": 0.0, "forces": forces}
        for correction in (NetForce(weighting), NetTorque(weighting)):
            out = correction(out, from_atoms(atoms), masses)
        expected.append(out["forces"])
    force_fn, torque_fn = remove_net_force, remove_net_torque
    if scripted:
        force_fn, torque_fn = torch.jit.script(remove_net_force), torch.jit.script(remove_net_torque)
    idx = torch.cat([torch.full((len(a),), s, dtype=torch.long) for s, a in enumerate(systems)])
    positions = torch.tensor(np.concatenate([a.positions for a in systems]))
    masses = np.concatenate([a.get_masses() for a in systems])
    weights = torch.tensor(masses) if weighting == "mass" else torch.ones(len(idx), dtype=torch.float64)
    forces = force_fn(torch.tensor(np.concatenate(raw)), weights, idx, len(systems))
    forces = torque_fn(forces, positions, weights, idx, len(systems)).numpy()
    np.testing.assert_allclose(forces, np.concatenate(expected), atol=1e-12)
    for s, atoms in enumerate(systems):
        mine = forces[idx.numpy() == s]
        assert np.abs(net_force(mine)).max() < 1e-12
        centre = (masses[idx.numpy() == s, None] * atoms.positions).sum(0) / atoms.get_masses().sum()
        assert np.abs(net_torque(mine, atoms.positions, None if weighting == "uniform" else centre)).max() < 1e-12
    assert np.abs(forces[: len(systems[0])] - raw[0]).max() > 1e-2  # it changed something


def test_planted_rigid_rotation_is_removed_exactly():
    """Torque-free forces plus a planted rigid-rotation field ``w x r'``: the removal
    takes away exactly the planted field (of size |w| |r'|, about 0.1-1 eV/Å here)."""
    atoms = _systems()[0]
    raw = {"energy": 0.0, "forces": np.random.default_rng(3).normal(size=(len(atoms), 3))}
    free = NetTorque()(NetForce()(raw, from_atoms(atoms)), from_atoms(atoms))["forces"]
    r = atoms.positions - atoms.positions.mean(axis=0)
    planted = free + np.cross([0.3, -0.7, 0.2], r)
    ones, idx = torch.ones(len(r), dtype=torch.float64), torch.zeros(len(r), dtype=torch.long)
    fixed = remove_net_torque(torch.tensor(planted), torch.tensor(atoms.positions), ones, idx, 1).numpy()
    assert np.abs(planted - free).max() > 0.1
    np.testing.assert_allclose(fixed, free, atol=1e-12)


def test_symmetric_solve_batched_is_the_pseudo_inverse():
    """Full-rank and singular (linear-molecule) inertia tensors in one batch: numpy's pinv."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 3))
    axis = rng.normal(size=3)
    matrices = np.stack([a @ a.T, np.eye(3) - np.outer(axis, axis) / axis @ axis, np.zeros((3, 3))])
    rhs = rng.normal(size=(3, 3))
    expected = np.stack([np.linalg.pinv(m, rcond=1e-12, hermitian=True) @ b for m, b in zip(matrices, rhs)])
    got = symmetric_solve(torch.tensor(matrices), torch.tensor(rhs)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert np.abs(got[2]).max() == 0.0  # a single atom: no rotation to remove
