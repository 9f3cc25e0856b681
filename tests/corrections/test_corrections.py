"""Minimal-bias corrections (issue 6): exact constraints on real exported models."""

from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput, System

from ase_symdiag import SymDiagCalculator
from ase_symdiag.corrections import (
    MixedForces,
    NetForce,
    NetTorque,
    PointGroupAverage,
    StochasticRotation,
    SymmetricStress,
    apply_corrections,
    net_force,
    net_torque,
    resolve_corrections,
    space_group_operations,
)
from ase_symdiag.backends.metatomic.evaluation import evaluate
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.errors import StructureError, UsageError
from ase_symdiag.reference.analytic import PairPotential, export_pair_potential
from ase_symdiag.structures import from_atoms

from conftest import BIAS, KAPPA

#: a uniform force planted on every atom's direct force, eV/Å (net force N * PUSH)
PUSH = (0.01, 0.02, -0.03)


class _PushedPairPotential(torch.nn.Module):
    """PairPotential(direct=True, direct_bias=BIAS) plus PUSH on every direct force.

    The reference models have zero net force by construction; this one does not.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inner = PairPotential(direct=True, direct_bias=BIAS)
        self.register_buffer("push", torch.tensor(PUSH, dtype=torch.float64))

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        results = self.inner(systems, outputs, selected_atoms)
        if "non_conservative_force" in results:
            block = results["non_conservative_force"].block()
            values = block.values + self.push.to(block.values.dtype).reshape(1, 3, 1)
            pushed = TensorBlock(values, block.samples, block.components, block.properties)
            results["non_conservative_force"] = TensorMap(results["non_conservative_force"].keys, [pushed])
        return results


@pytest.fixture(scope="module")
def pushed_model(model_dir):
    path = model_dir / "pushed.pt"
    outputs = {
        "energy": ModelOutput(unit="eV", sample_kind="atom"),
        "non_conservative_force": ModelOutput(unit="eV/Angstrom", sample_kind="atom"),
        "non_conservative_stress": ModelOutput(unit="eV/Angstrom^3", sample_kind="system"),
    }
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=[1, 6, 7, 8, 29],
        interaction_range=5.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    AtomisticModel(_PushedPairPotential().eval(), ModelMetadata(name="pushed"), capabilities).save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def quadrupole_direct_model(model_dir):
    """Direct heads AND the lambda = 2 quadrupole: the direct stress is asymmetric."""
    path = model_dir / "quadrupole-direct.pt"
    export_pair_potential(path, direct=True, quadrupole=KAPPA, direct_bias=BIAS)
    return str(path)


def _forces(atoms, model, corrections=(), **kwargs):
    atoms = atoms.copy()
    atoms.calc = SymDiagCalculator(model, corrections=corrections, **kwargs)
    return atoms.get_forces(), atoms


# ---------------------------------------------------------------------------------------
# net force and net torque
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["cluster", "ethanol"])
@pytest.mark.parametrize("weighting", ["uniform", "mass"])
def test_net_force_and_torque_vanish(request, pushed_model, system, weighting):
    atoms = request.getfixturevalue(system)
    raw, _ = _forces(atoms, pushed_model, non_conservative=True)
    fixed, calc_atoms = _forces(
        atoms, pushed_model, [NetForce(weighting), NetTorque(weighting)], non_conservative=True
    )
    com = atoms.get_center_of_mass()
    assert np.abs(net_force(raw)).max() > 0.05  # N * PUSH
    assert np.abs(net_torque(raw, atoms.positions)).max() > 1e-3
    assert np.abs(net_force(fixed)).max() < 1e-10
    for centre in (None, com, np.array([10.0, -3.0, 2.0])):  # zero net force: any point
        assert np.abs(net_torque(fixed, atoms.positions, centre)).max() < 1e-10
    assert calc_atoms.get_potential_energy() == SymDiagCalculator(pushed_model).get_potential_energy(atoms)


@pytest.mark.parametrize("system", ["cluster", "ethanol"])
def test_conservative_broken_model_torque(request, broken_model, system):
    """The quadrupole energy is not rotation-invariant: its forces carry a torque."""
    atoms = request.getfixturevalue(system)
    raw, _ = _forces(atoms, broken_model)
    fixed, _ = _forces(atoms, broken_model, ["net_force", "net_torque"])
    assert np.abs(net_torque(raw, atoms.positions)).max() > 1e-3
    assert np.abs(net_force(fixed)).max() < 1e-10
    assert np.abs(net_torque(fixed, atoms.positions)).max() < 1e-10


def test_order_of_net_force_and_net_torque(cluster, pushed_model):
    """NetTorque last is exact for any weighting; NetForce last can put a torque back."""
    masses = cluster.get_masses().copy()
    masses[:4] *= 3.0  # centre of mass away from the centroid
    cluster.set_masses(masses)
    good, _ = _forces(cluster, pushed_model, [NetForce(), NetTorque("mass")], non_conservative=True)
    bad, _ = _forces(cluster, pushed_model, [NetTorque("mass"), NetForce()], non_conservative=True)
    assert np.abs(net_force(good)).max() < 1e-10
    assert np.abs(net_torque(good, cluster.positions)).max() < 1e-10
    assert np.abs(net_force(bad)).max() < 1e-10
    assert np.abs(net_torque(bad, cluster.positions)).max() > 1e-4
    # matching weights commute
    a, _ = _forces(cluster, pushed_model, ["net_force", "net_torque"], non_conservative=True)
    b, _ = _forces(cluster, pushed_model, ["net_torque", "net_force"], non_conservative=True)
    np.testing.assert_allclose(a, b, atol=1e-13, rtol=0)


@pytest.mark.parametrize("name", ["CO2", "single"])
def test_net_torque_linear_and_single_atom(name):
    atoms = molecule("CO2") if name == "CO2" else molecule("CO2")[:1]
    rng = np.random.default_rng(0)
    outputs = {"energy": 0.0, "forces": rng.normal(size=(len(atoms), 3)), "stress": None, "energies": None}
    out = apply_corrections(["net_force", "net_torque"], outputs, from_atoms(atoms))
    assert np.all(np.isfinite(out["forces"]))
    assert np.abs(net_force(out["forces"])).max() < 1e-12
    assert np.abs(net_torque(out["forces"], atoms.positions)).max() < 1e-12
    assert outputs["forces"] is not out["forces"]  # pure


@pytest.mark.parametrize("system", ["crystal", "slab"])
def test_net_torque_is_a_no_op_for_periodic(request, system):
    atoms = request.getfixturevalue(system)
    rng = np.random.default_rng(1)
    outputs = {"energy": 1.0, "forces": rng.normal(size=(len(atoms), 3)), "stress": None, "energies": None}
    out = NetTorque()(outputs, from_atoms(atoms))
    np.testing.assert_array_equal(out["forces"], outputs["forces"])
    moved = NetForce()(outputs, from_atoms(atoms))
    assert np.abs(net_force(moved["forces"])).max() < 1e-12


# ---------------------------------------------------------------------------------------
# stress
# ---------------------------------------------------------------------------------------


def test_direct_broken_model_stress_is_already_symmetric(direct_broken_model, crystal):
    """Its planted breaking is in the direct forces only: the pair virial d x grad u is
    symmetric for a central pair term, so the asymmetric case needs the quadrupole."""
    stress = evaluate(ModelHandle.load(direct_broken_model), from_atoms(crystal), direct=True).direct_stress[0]
    assert np.abs(stress - stress.T).max() < 1e-15


@pytest.mark.parametrize("head", ["direct_stress", "stress"])
def test_symmetric_stress(quadrupole_direct_model, crystal, head):
    structure = from_atoms(crystal)
    prediction = evaluate(ModelHandle.load(quadrupole_direct_model), structure, direct=True)
    raw = getattr(prediction, head)[0]
    assert np.abs(raw - raw.T).max() > 1e-7  # measured 1.9e-6 eV/Å^3
    outputs = {"energy": float(prediction.energy[0]), "forces": None, "stress": raw, "energies": None}
    fixed = SymmetricStress()(outputs, structure)["stress"]
    assert np.abs(fixed - fixed.T).max() <= 1e-18
    np.testing.assert_allclose(fixed, 0.5 * (raw + raw.T), rtol=0, atol=1e-18)
    np.testing.assert_array_equal(outputs["stress"], raw)  # input untouched


# ---------------------------------------------------------------------------------------
# crystal symmetry
# ---------------------------------------------------------------------------------------

#: (scale of the cubic cell, [(atom, axis, displacement Å)], expected spglib symbol, operations)
CRYSTALS = {
    "Fm-3m": ((1.0, 1.0, 1.0), [], "Fm-3m", 1536),  # 2x2x2 supercell: 48 rotations x 32
    "P4/nmm": ((1.0, 1.0, 1.05), [(1, 2, 0.1), (2, 2, -0.1)], "P4/nmm", 16),
    "P4mm": ((1.0, 1.0, 1.05), [(1, 2, 0.1)], "P4mm", 8),
    "Pmm2": ((1.0, 1.03, 1.05), [(1, 2, 0.1)], "Pmm2", 4),
    "Pm": ((1.0, 1.03, 1.05), [(1, 2, 0.1), (1, 0, 0.07)], "Pm", 2),
}


def _symmetric_crystal(name):
    """A strained fcc cell with symmetry-compatible displacements, in a generic orientation."""
    from scipy.spatial.transform import Rotation

    scale, displacements, _, _ = CRYSTALS[name]
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.set_cell(atoms.cell.array * np.array(scale), scale_atoms=True)
    for atom, axis, value in displacements:
        atoms.positions[atom, axis] += value
    if name == "Fm-3m":
        atoms = atoms * (2, 2, 2)
    rotation = Rotation.from_rotvec([0.3, -0.7, 1.1]).as_matrix()  # planted axes now generic
    atoms.set_cell(atoms.cell.array @ rotation.T, scale_atoms=True)
    return atoms


def _independent_operations(atoms, symprec=1e-5):
    """(Q, perm) from spglib's dataset with a brute-force minimum-image matching."""
    import spglib

    cell = atoms.cell.array
    frac = atoms.get_scaled_positions()
    data = spglib.get_symmetry_dataset((cell, frac, atoms.numbers), symprec=symprec, _throw=True)
    out = []
    for rf, tf in zip(data.rotations, data.translations):
        image = frac @ rf.T + tf
        diff = image[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        perm = np.argmin(np.linalg.norm(diff @ cell, axis=-1), axis=1)
        out.append((cell.T @ rf @ np.linalg.inv(cell.T), perm))
    return data.international, out


def _violation(forces, stress, operations):
    worst_f = max(np.abs(forces[perm] - forces @ q.T).max() for q, perm in operations)
    worst_s = max(np.abs(q @ stress @ q.T - stress).max() for q, _ in operations)
    return worst_f, worst_s


@pytest.mark.parametrize("name", list(CRYSTALS))
@pytest.mark.parametrize("head", ["conservative", "direct"])
def test_point_group_average_is_exactly_equivariant(quadrupole_direct_model, name, head):
    atoms = _symmetric_crystal(name)
    symbol, operations = _independent_operations(atoms)
    assert (symbol, len(operations)) == CRYSTALS[name][2:]
    q, perm = space_group_operations(from_atoms(atoms))
    assert len(q) == len(operations)

    nc = head == "direct"
    raw_atoms = atoms.copy()
    raw_atoms.calc = SymDiagCalculator(quadrupole_direct_model, non_conservative=nc)
    fixed_atoms = atoms.copy()
    fixed_atoms.calc = SymDiagCalculator(quadrupole_direct_model, non_conservative=nc, corrections=["point_group"])
    raw_f, raw_s = raw_atoms.get_forces(), raw_atoms.get_stress(voigt=False)
    fixed_f, fixed_s = fixed_atoms.get_forces(), fixed_atoms.get_stress(voigt=False)

    raw_violation = _violation(raw_f, raw_s, operations)
    fixed_violation = _violation(fixed_f, fixed_s, operations)
    if name != "Fm-3m":  # forces vanish at the inversion centres of the perfect lattice
        assert raw_violation[0] > 1e-5
    assert raw_violation[1] > 1e-5
    assert max(fixed_violation) < 1e-12
    assert fixed_atoms.get_potential_energy() == raw_atoms.get_potential_energy()
    energies = fixed_atoms.get_potential_energies()  # averaged over equivalent atoms
    assert max(np.abs(energies[perm] - energies).max() for _, perm in operations) < 1e-12
    assert abs(energies.sum() - raw_atoms.get_potential_energies().sum()) < 1e-13 * len(energies)

    # same formulas as metatomic-ase's output projector (one operation per rotation there)
    from metatomic_ase._symmetry import _average_over_group, _get_group_operations

    q_list, p_list = _get_group_operations(atoms, symprec=1e-5)
    theirs = _average_over_group({"energy": 0.0, "forces": raw_f, "stress": raw_s}, q_list, p_list)
    np.testing.assert_allclose(theirs["forces"], fixed_f, atol=1e-12, rtol=0)
    np.testing.assert_allclose(theirs["stress"], fixed_s, atol=1e-12, rtol=0)


def test_point_group_is_a_no_op_for_finite(cluster):
    rng = np.random.default_rng(2)
    outputs = {"energy": 1.0, "forces": rng.normal(size=(len(cluster), 3)), "stress": None, "energies": None}
    out = PointGroupAverage()(outputs, from_atoms(cluster))
    np.testing.assert_array_equal(out["forces"], outputs["forces"])


# ---------------------------------------------------------------------------------------
# calculator integration
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetrize", [None, "O"])
@pytest.mark.parametrize("non_conservative", [False, True])
@pytest.mark.parametrize("corrections", [(), [], None])
def test_empty_corrections_bit_identical(crystal, equivariant_model, broken_model, symmetrize, non_conservative, corrections):
    model = equivariant_model if non_conservative else broken_model
    plain = crystal.copy()
    plain.calc = SymDiagCalculator(model, symmetrize=symmetrize, non_conservative=non_conservative)
    other = crystal.copy()
    other.calc = SymDiagCalculator(model, symmetrize=symmetrize, non_conservative=non_conservative, corrections=corrections)
    assert plain.get_potential_energy() == other.get_potential_energy()
    np.testing.assert_array_equal(plain.get_forces(), other.get_forces())
    np.testing.assert_array_equal(plain.get_stress(), other.get_stress())
    assert set(plain.calc.results) == set(other.calc.results)
    assert "corrections" not in other.calc.parameters


def test_stochastic_rotation_is_unbiased_and_fresh(cluster, broken_model):
    """Mean over many calls -> the symmetrized value, within the rotational std / sqrt(M)."""
    symmetrized = cluster.copy()
    symmetrized.calc = SymDiagCalculator(broken_model, symmetrize=5)  # exact mean and variance
    reference, spread = symmetrized.get_forces(), symmetrized.calc.results["forces_std"]
    energy, energy_spread = symmetrized.get_potential_energy(), symmetrized.calc.results["energy_std"]

    calc = SymDiagCalculator(broken_model, corrections=[StochasticRotation(seed=11)])
    n_calls = 240
    forces, energies = [], []
    for _ in range(n_calls):
        calc.calculate(cluster, ["energy", "forces"], ["positions"])
        forces.append(calc.results["forces"].copy())
        energies.append(calc.results["energy"])
    forces = np.array(forces)
    assert "forces_std" not in calc.results  # one sample: no rotational spread to report
    assert np.abs(forces[1] - forces[0]).max() > 1e-4  # each call differs
    assert len({round(e, 12) for e in energies}) == n_calls
    mask = spread > 1e-6
    z = (forces.mean(axis=0) - reference)[mask] / (spread[mask] / np.sqrt(n_calls))
    assert np.sqrt(np.mean(z**2)) < 1.5, np.sqrt(np.mean(z**2))  # ~1 if unbiased
    assert np.abs(z).max() < 5.0
    assert abs(np.mean(energies) - energy) < 4.0 * energy_spread / np.sqrt(n_calls)
    per_call = np.sqrt(np.mean((forces - reference) ** 2, axis=0))
    np.testing.assert_allclose(per_call[mask], spread[mask], rtol=0.3)  # noise = rotational std


def test_stochastic_rotation_of_an_exact_quadrature(cluster, broken_model):
    """A randomly rotated quadrature exact to degree 3 still averages the lambda = 2 breaking away."""
    reference, _ = _forces(cluster, broken_model, symmetrize="O")
    rotated, atoms = _forces(cluster, broken_model, ["stochastic:3"], symmetrize="O")
    np.testing.assert_allclose(rotated, reference, atol=1e-12, rtol=0)
    assert "forces_std" in atoms.calc.results


def test_mixed_forces(cluster, direct_broken_model):
    every = 3
    calc = SymDiagCalculator(direct_broken_model, non_conservative=True, corrections=[MixedForces(every=every)])
    conservative = SymDiagCalculator(direct_broken_model)
    direct = SymDiagCalculator(direct_broken_model, non_conservative=True)
    rng = np.random.default_rng(3)
    atoms = cluster.copy()
    delta = None
    for step in range(7):
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        forces = calc.get_forces(atoms)
        f_cons, f_direct = conservative.get_forces(atoms), direct.get_forces(atoms)
        if step % every == 0:
            np.testing.assert_allclose(forces, f_cons, atol=1e-12, rtol=0)
            delta = f_cons - f_direct
            assert np.abs(delta).max() > 1e-3  # the planted direct bias
        else:
            np.testing.assert_allclose(forces, f_direct + delta, atol=1e-12, rtol=0)
    smaller = atoms[:-1]  # step 7 is not a refresh step, but the held delta no longer fits
    np.testing.assert_allclose(calc.get_forces(smaller), conservative.get_forces(smaller), atol=1e-12, rtol=0)
    with pytest.raises(UsageError, match="non_conservative"):
        SymDiagCalculator(direct_broken_model, corrections=[MixedForces(2)]).get_forces(atoms)


def test_resolve_corrections():
    resolved = resolve_corrections("net_force, net_torque")
    assert [c.name for c in resolved] == ["net_force", "net_torque"]
    resolved = resolve_corrections(["symmetric_stress", "point_group", "stochastic:7", NetForce, "mixed_forces:4"])
    assert [type(c).__name__ for c in resolved] == [
        "SymmetricStress", "PointGroupAverage", "StochasticRotation", "NetForce", "MixedForces",
    ]
    assert resolved[2].seed == 7 and resolved[4].every == 4
    assert resolve_corrections(None) == [] and resolve_corrections(()) == []
    with pytest.raises(UsageError, match="unknown correction"):
        resolve_corrections("net_momentum")
    with pytest.raises(UsageError, match="at most one"):
        resolve_corrections(["stochastic", "stochastic:2"])
    with pytest.raises(UsageError, match="integer"):
        resolve_corrections("net_force:3")
    with pytest.raises(UsageError, match="name or a callable"):
        resolve_corrections([3])


def test_bad_arguments_and_structures_raise_the_hierarchy():
    with pytest.raises(UsageError, match="weighting must be"):
        NetForce("charge")
    with pytest.raises(UsageError, match="every must be"):
        MixedForces(0)
    finite = from_atoms(molecule("H2O"))
    outputs = {"energy": 0.0, "forces": np.ones((3, 3)), "stress": None, "energies": None}
    with pytest.raises(UsageError, match="needs the atomic masses"):
        NetTorque("mass")(outputs, finite)
    with pytest.raises(UsageError, match="positive numbers"):
        NetForce("mass")(outputs, finite, masses=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(StructureError, match="periodic in all directions"):
        space_group_operations(finite)


def test_stochastic_rotations_are_haar_o3():
    sampler = StochasticRotation(seed=0)
    rotations = np.concatenate([sampler.rotations(None)[0] for _ in range(4000)])
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-12)
    assert abs(np.mean(np.linalg.det(rotations))) < 0.05  # proper and improper equally
    assert np.abs(rotations.mean(axis=0)).max() < 0.05  # Haar: mean of D^1 vanishes
    proper = StochasticRotation(seed=0, include_inversion=False).rotations(None)[0]
    assert np.linalg.det(proper[0]) > 0


# ---------------------------------------------------------------------------------------
# MD: angular momentum
# ---------------------------------------------------------------------------------------


def _nve_angular_momentum(atoms, model, corrections, steps=200, dt_fs=0.5):
    """|L(t)| in amu Å^2/fs and its scale sum_i m_i |r_i - c| |v_i| for an NVE run."""
    atoms = atoms.copy()
    rng = np.random.default_rng(0)
    masses = atoms.get_masses()
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(units.kB * 100.0 * masses)[:, None])
    Stationary(atoms)
    ZeroRotation(atoms)
    r = atoms.positions - atoms.get_center_of_mass()
    scale = np.sum(masses * np.linalg.norm(r, axis=1) * np.linalg.norm(atoms.get_velocities(), axis=1))
    atoms.calc = SymDiagCalculator(model, corrections=corrections)
    history = []
    dynamics = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    dynamics.attach(lambda: history.append(np.linalg.norm(atoms.get_angular_momentum())), interval=1)
    dynamics.run(steps)
    momentum = np.linalg.norm(atoms.get_momenta().sum(axis=0))
    return np.array(history) * units.fs, scale * units.fs, momentum * units.fs


def test_nve_angular_momentum(cluster, broken_model):
    raw, scale, _ = _nve_angular_momentum(cluster, broken_model, ())
    fixed, _, momentum = _nve_angular_momentum(cluster, broken_model, ["net_force", "net_torque"])
    assert raw[0] < 1e-12 and fixed[0] < 1e-12  # zero angular momentum at the start
    # measured after 100 fs: raw |L| = 6.9e-3 amu Å^2/fs (2.6e-3 of the scale 2.67)
    assert raw[-1] > 1e-3
    assert fixed.max() / scale < 1e-10  # measured 6e-16
    assert momentum < 1e-10
