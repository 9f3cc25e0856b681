"""Exported models under MPI domain decomposition, done in Python as LAMMPS does it.

``pair_style metatomic`` on several MPI ranks calls the model once per domain with
the domain's local atoms plus every ghost within the model's interaction range
(periodic images included, as explicit atoms), ``selected_atoms`` = the local
atoms, differentiates the returned energy with respect to the positions of all of
them and to the strain, and sends the forces on ghosts back to the atoms they are
images of (``newton on``). Summed over domains, energy, forces and virial must equal
one call on the whole periodic system. The whole-system reference is computed
independently: vesin's periodic neighbour list, no selection, one call.
"""

import itertools

import numpy as np
import pytest
import torch
from ase.build import bulk

N_DOMAINS = {2: (2, 1, 1), 8: (2, 2, 2)}


def _neighbors(model, types, positions, cell, pbc):
    """vesin neighbour lists (samples + vectors) for ``model``'s requests."""
    import vesin.metatomic
    from metatomic.torch import System

    cell = cell.detach() if bool(pbc.all()) else torch.zeros(3, 3, dtype=cell.dtype)
    system = System(types, positions.detach(), cell, pbc)
    out = []
    for options in model.requested_neighbor_lists():
        block = vesin.metatomic.NeighborList(options, length_unit="angstrom").compute(system, copy=True)
        out.append((options, block))
    return out


def _call(model, types, positions, cell, pbc, selected=None, per_atom=False):
    """Energy (total over the selection), -dE/dx for every atom given, -dE/d(strain);
    neighbour vectors rebuilt from strained positions so that autograd reaches both.
    ``selected`` given: a domain, whose ghosts are explicit atoms, so its pairs are
    found without periodic images (cell shifts 0) while the system keeps the box and
    its pbc, as LAMMPS passes them."""
    from metatensor.torch import Labels, TensorBlock
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, System

    positions = positions.clone().requires_grad_(True)
    strain = torch.eye(3, dtype=torch.float64, requires_grad=True)
    strained = positions @ strain
    strained_cell = cell @ strain
    system = System(types, strained, strained_cell, pbc)
    nl_pbc = pbc if selected is None else torch.tensor([False] * 3)
    for options, block in _neighbors(model, types, positions, cell, nl_pbc):
        samples = block.samples.values
        shifts = samples[:, 2:5].to(torch.float64)
        vectors = strained[samples[:, 1].long()] - strained[samples[:, 0].long()] + shifts @ strained_cell
        system.add_neighbor_list(
            options, TensorBlock(vectors.reshape(-1, 3, 1), block.samples, block.components, block.properties)
        )
    selection = None
    if selected is not None:
        selection = Labels(["system", "atom"], torch.tensor([[0, i] for i in selected], dtype=torch.int32))
    options = ModelEvaluationOptions(
        length_unit="angstrom",
        outputs={"energy": ModelOutput(unit="eV", sample_kind="atom" if per_atom else "system")},
        selected_atoms=selection,
    )
    block = model([system], options, check_consistency=True)["energy"].block()
    energy = block.values.sum()
    grad_x, grad_strain = torch.autograd.grad(energy, [positions, strain])
    return float(energy.detach()), (-grad_x).numpy(), (-grad_strain).numpy(), block


def whole_system(model, atoms):
    types = torch.tensor(atoms.numbers, dtype=torch.int32)
    positions = torch.tensor(atoms.positions, dtype=torch.float64)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=torch.float64)
    energy, forces, virial, _ = _call(model, types, positions, cell, torch.tensor([True] * 3))
    return energy, forces, virial


def domains(atoms, grid, ghost_range):
    """Per domain of a ``grid`` split of the (orthorhombic) cell: ``(owner, positions,
    n_local)``: local atoms first, then every periodic image of any atom (other
    than the local atoms themselves) within ``ghost_range`` of the domain box."""
    lengths = np.diag(np.asarray(atoms.cell))
    assert np.allclose(np.asarray(atoms.cell), np.diag(lengths)), "orthorhombic cells only"
    scaled = atoms.get_scaled_positions(wrap=True)
    wrapped = scaled * lengths
    cell_index = np.minimum((scaled * grid).astype(int), np.array(grid) - 1)
    reach = int(np.ceil(ghost_range / lengths.min())) + 1
    images = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)))
    out = []
    for index in itertools.product(*(range(g) for g in grid)):
        lo = np.array(index) / grid * lengths
        hi = (np.array(index) + 1) / grid * lengths
        local = np.flatnonzero((cell_index == index).all(axis=1))
        owner, positions = list(local), list(wrapped[local])
        for shift in images:
            shifted = wrapped + shift * lengths
            outside = np.maximum(np.maximum(lo - shifted, shifted - hi), 0.0)
            near = np.linalg.norm(outside, axis=1) < ghost_range
            if not shift.any():
                near[local] = False
            for j in np.flatnonzero(near):
                owner.append(j)
                positions.append(shifted[j])
        out.append((np.array(owner), np.array(positions), len(local)))
    return out


def decomposed(model, atoms, grid, per_atom=False):
    """Energy, forces and virial summed over the domains of ``grid``, ghost forces
    sent back to their owners; also the per-atom energies of the locals."""
    ghost_range = model.capabilities().interaction_range
    energy, forces, virial = 0.0, np.zeros((len(atoms), 3)), np.zeros((3, 3))
    energies = np.full(len(atoms), np.nan)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=torch.float64)
    seen = np.zeros(len(atoms), dtype=int)
    for owner, positions, n_local in domains(atoms, grid, ghost_range):
        assert n_local > 0 and len(owner) > n_local
        seen[owner[:n_local]] += 1
        types = torch.tensor(atoms.numbers[owner], dtype=torch.int32)
        e, f, v, block = _call(
            model, types, torch.tensor(positions), cell, torch.tensor([True] * 3),
            selected=range(n_local), per_atom=per_atom,
        )
        energy += e
        np.add.at(forces, owner, f)  # locals and ghosts (reverse communication)
        virial += v
        if per_atom:
            atom = block.samples.column("atom").numpy()
            assert set(atom) == set(range(n_local))
            energies[owner[atom]] = block.values.detach().numpy().reshape(-1)
    assert (seen == 1).all(), "every atom is owned by exactly one domain"
    return energy, forces, virial, energies


@pytest.fixture(scope="module")
def periodic_cu():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    atoms.rattle(0.1, seed=11)
    atoms.wrap()
    return atoms


@pytest.fixture(scope="module")
def exports(broken_model, tmp_path_factory):
    """raw, symmetrized (T_h, 24 operations) and adaptive (quadrature chosen by
    ``ase-symdiag symmetrize`` from a measured spectrum) exports, plus the
    symmetrized one with non-conservative outputs and the corrected one."""
    from ase_symdiag.cli import main
    from ase_symdiag.backends.metatomic.corrected import export_corrected
    from ase_symdiag.backends.metatomic.export import export_symmetrized

    folder = tmp_path_factory.mktemp("domains")
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    crystal.rattle(0.05, seed=1)
    crystal.write(folder / "crystal.extxyz")
    paths = {"raw": broken_model}
    export_symmetrized(broken_model, folder / "symmetrized.pt", quadrature="T", batch_size=5, chunk_atoms=600)
    paths["symmetrized"] = str(folder / "symmetrized.pt")
    assert main(["symmetrize", broken_model, str(folder / "crystal.extxyz"), "--lmax", "2",
                 "--tolerance", "0.001", "--export", str(folder / "adaptive.pt")]) == 0
    paths["adaptive"] = str(folder / "adaptive.pt")
    assert "Th" in _load(paths["adaptive"]).metadata().name  # the planted lambda = 2 needs T_h
    export_symmetrized(broken_model, folder / "symmetrized-nc.pt", quadrature="T", non_conservative=True)
    paths["symmetrized-nc"] = str(folder / "symmetrized-nc.pt")
    export_corrected(broken_model, folder / "corrected.pt")
    paths["corrected"] = str(folder / "corrected.pt")
    return paths


def _load(path):
    from metatomic.torch import load_atomistic_model

    return load_atomistic_model(path)


@pytest.mark.parametrize("n_domains", [2, 8])
@pytest.mark.parametrize("kind", ["raw", "symmetrized", "adaptive"])
def test_domain_decomposition_equals_whole_system(exports, periodic_cu, kind, n_domains):
    model = _load(exports[kind])
    energy, forces, virial = whole_system(model, periodic_cu)
    got_energy, got_forces, got_virial, _ = decomposed(model, periodic_cu, N_DOMAINS[n_domains])
    assert abs(got_energy - energy) < 1e-10 * max(1.0, abs(energy))
    np.testing.assert_allclose(got_forces, forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got_virial, virial, rtol=0, atol=1e-10)
    assert np.abs(forces).max() > 0.1  # a real test: forces are not trivially zero


def test_domain_per_atom_energies(exports, periodic_cu):
    """LAMMPS' per-atom energies (compute pe/atom): each rank returns its locals'."""
    from ase_symdiag import SymDiagCalculator

    model = _load(exports["symmetrized"])
    _, forces, _, energies = decomposed(model, periodic_cu, N_DOMAINS[8], per_atom=True)
    atoms = periodic_cu.copy()
    atoms.calc = SymDiagCalculator(exports["raw"], symmetrize="T")
    np.testing.assert_allclose(energies, atoms.get_potential_energies(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-10)


def test_symmetrized_export_matches_the_calculator(exports, periodic_cu):
    """The whole-system reference itself against the in-process average."""
    from ase_symdiag import SymDiagCalculator

    energy, forces, virial = whole_system(_load(exports["symmetrized"]), periodic_cu)
    atoms = periodic_cu.copy()
    atoms.calc = SymDiagCalculator(exports["raw"], symmetrize="T")
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-10)
    stress = -virial / atoms.get_volume()
    np.testing.assert_allclose(stress, atoms.get_stress(voigt=False), rtol=0, atol=1e-12)


def _nc_call(model, atoms, positions, owner_types, selected):
    from metatensor.torch import Labels
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, System

    types = torch.tensor(owner_types, dtype=torch.int32)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=torch.float64)
    system = System(types, torch.tensor(positions), cell, torch.tensor([True] * 3))
    nl_pbc = torch.tensor([selected is None or len(selected) == len(positions)] * 3)
    for options, block in _neighbors(model, types, system.positions, cell, nl_pbc):
        system.add_neighbor_list(options, block)
    selection = None
    if selected is not None:
        selection = Labels(["system", "atom"], torch.tensor([[0, i] for i in selected], dtype=torch.int32))
    options = ModelEvaluationOptions(
        length_unit="angstrom",
        outputs={
            "energy": ModelOutput(unit="eV", sample_kind="system"),
            "non_conservative_force": ModelOutput(unit="eV/Angstrom", sample_kind="atom"),
            "non_conservative_stress": ModelOutput(unit="eV/Angstrom^3", sample_kind="system"),
        },
        selected_atoms=selection,
    )
    return model([system], options, check_consistency=True)


@pytest.mark.parametrize("kind, message", [
    ("corrected", "removes the net force"),
    ("symmetrized-nc", "non_conservative off"),
])
def test_non_conservative_outputs_refuse_a_domain(exports, periodic_cu, kind, message):
    """Net-force removal and -dE/dx of the whole average need every atom: on a domain
    (selected_atoms a strict subset) they refuse and say what to use instead; on the
    whole system (one MPI rank: LAMMPS folds periodic ghosts into cell shifts, so
    selected_atoms is every atom) they work."""
    model = _load(exports[kind])
    owner, positions, n_local = domains(periodic_cu, N_DOMAINS[2], model.capabilities().interaction_range)[0]
    with pytest.raises(Exception, match=message):
        _nc_call(model, periodic_cu, positions, periodic_cu.numbers[owner], range(n_local))
    result = _nc_call(model, periodic_cu, periodic_cu.positions, periodic_cu.numbers, range(len(periodic_cu)))
    forces = result["non_conservative_force"].block().values.detach().numpy().reshape(-1, 3)
    assert forces.shape == (len(periodic_cu), 3)


def test_non_conservative_outputs_are_the_gradients(exports, periodic_cu):
    """The symmetrized export's direct outputs equal its energy's autograd forces and
    stress (whole system), so LAMMPS 'non_conservative on' runs the same dynamics."""
    model = _load(exports["symmetrized-nc"])
    energy, forces, virial = whole_system(model, periodic_cu)
    result = _nc_call(model, periodic_cu, periodic_cu.positions, periodic_cu.numbers, None)
    direct = result["non_conservative_force"].block().values.detach().numpy().reshape(-1, 3)
    stress = result["non_conservative_stress"].block().values.detach().numpy().reshape(3, 3)
    assert float(result["energy"].block().values) == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(direct, forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(stress, -virial / periodic_cu.get_volume(), rtol=0, atol=1e-12)
