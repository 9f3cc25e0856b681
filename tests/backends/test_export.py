"""Exported symmetrized models: loadable by metatomic-ase, equal to in-process averaging."""

import numpy as np
import pytest

from ase_symdiag import SymDiagCalculator, check_equivariance
from ase_symdiag.backends.metatomic.export import export_symmetrized


@pytest.fixture(scope="module")
def symmetrized_file(broken_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "symmetrized-T.pt"
    export_symmetrized(broken_model, "T", path, batch_size=5)
    return str(path)


@pytest.mark.parametrize("fixture", ["crystal", "cluster"])
def test_exported_equals_in_process_average(broken_model, symmetrized_file, fixture, request):
    from metatomic_ase import MetatomicCalculator

    atoms = request.getfixturevalue(fixture)
    ours = atoms.copy()
    ours.calc = SymDiagCalculator(broken_model, symmetrize="T")
    exported = atoms.copy()
    exported.calc = MetatomicCalculator(symmetrized_file, check_consistency=True)
    assert exported.get_potential_energy() == pytest.approx(ours.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(exported.get_forces(), ours.get_forces(), atol=1e-10)
    np.testing.assert_allclose(exported.get_potential_energies(), ours.get_potential_energies(), atol=1e-10)
    if atoms.pbc.all():
        np.testing.assert_allclose(exported.get_stress(), ours.get_stress(), atol=1e-12)


def test_exported_removes_the_planted_breaking(broken_model, symmetrized_file, cluster):
    raw = check_equivariance(broken_model, cluster, n_rotations=4)
    fixed = check_equivariance(symmetrized_file, cluster, n_rotations=4)
    assert raw.structures[0].forces.relative > 1e-4
    assert fixed.structures[0].forces.relative < 1e-10  # T_h kills lambda = 2 exactly
    metadata_name = SymDiagCalculator(symmetrized_file).handle.model.metadata().name
    assert "symmetrized over Th" in metadata_name


def test_export_needs_a_quadrature(broken_model, tmp_path):
    with pytest.raises(ValueError, match="needs a quadrature"):
        export_symmetrized(broken_model, None, tmp_path / "x.pt")


def test_selected_atoms_as_lammps_passes_them(broken_model, symmetrized_file, crystal):
    """pair_style metatomic asks for the atoms each rank owns; the energy must follow."""
    import torch
    from metatensor.torch import Labels
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, load_atomistic_model

    from ase_symdiag import ModelHandle
    from ase_symdiag.backends.metatomic.evaluation import build_graphs, _neighbor_block
    from ase_symdiag.structures import from_atoms

    structure = from_atoms(crystal)
    per_atom = SymDiagCalculator(broken_model, symmetrize="T")
    crystal.calc = per_atom
    reference = crystal.get_potential_energies()
    for path in (broken_model, symmetrized_file):
        model = load_atomistic_model(path)
        handle = ModelHandle.load(model)
        from metatomic.torch import System

        positions = torch.tensor(structure.positions)
        cell = torch.tensor(structure.cell)
        system = System(torch.tensor(structure.numbers, dtype=torch.int32), positions, cell, torch.tensor(structure.pbc))
        for graph in build_graphs(handle, structure):
            vectors = positions[graph.second] - positions[graph.first] + graph.shifts @ cell
            system.add_neighbor_list(graph.options, _neighbor_block(graph, vectors))
        chosen = [0, 5, 6, 31]
        selection = Labels(["system", "atom"], torch.tensor([[0, i] for i in chosen]))
        options = ModelEvaluationOptions(
            length_unit="angstrom", outputs={"energy": ModelOutput(unit="eV", sample_kind="system")}, selected_atoms=selection
        )
        energy = float(model([system], options, check_consistency=True)["energy"].block().values)
        if path == symmetrized_file:
            assert energy == pytest.approx(reference[chosen].sum(), rel=1e-10)
        else:
            raw = crystal.copy()
            raw.calc = SymDiagCalculator(broken_model)
            assert energy == pytest.approx(raw.get_potential_energies()[chosen].sum(), rel=1e-10)


@pytest.fixture(scope="module")
def corrected_file(broken_model, tmp_path_factory):
    from ase_symdiag.backends.metatomic.corrected import export_corrected

    path = tmp_path_factory.mktemp("corrected") / "corrected.pt"
    export_corrected(broken_model, path)
    return str(path)


def test_exported_corrections_match_the_calculator(broken_model, corrected_file, cluster, crystal):
    from metatomic_ase import MetatomicCalculator

    exported = cluster.copy()
    exported.calc = MetatomicCalculator(corrected_file, non_conservative="forces", check_consistency=True)
    ours = cluster.copy()
    ours.calc = SymDiagCalculator(broken_model, corrections=["net_force", "net_torque"])
    forces = exported.get_forces()
    np.testing.assert_allclose(forces, ours.get_forces(), atol=1e-10)
    r = cluster.positions - cluster.positions.mean(axis=0)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10
    assert np.abs(np.cross(r, forces).sum(axis=0)).max() < 1e-10
    raw = cluster.copy()
    raw.calc = SymDiagCalculator(broken_model)
    assert np.abs(np.cross(r, raw.get_forces()).sum(axis=0)).max() > 1e-4  # there was a torque

    periodic = crystal.copy()
    periodic.calc = MetatomicCalculator(corrected_file, non_conservative=True, check_consistency=True)
    reference = crystal.copy()
    reference.calc = SymDiagCalculator(broken_model, corrections=["net_force", "symmetric_stress"])
    np.testing.assert_allclose(periodic.get_forces(), reference.get_forces(), atol=1e-10)
    np.testing.assert_allclose(periodic.get_stress(), reference.get_stress(), atol=1e-12)


def test_exported_corrections_compose_with_averaging(broken_model, cluster, tmp_path):
    from metatomic_ase import MetatomicCalculator

    from ase_symdiag.backends.metatomic.corrected import export_corrected

    path = tmp_path / "sym-corrected.pt"
    export_corrected(broken_model, path, quadrature="T")
    exported = cluster.copy()
    exported.calc = MetatomicCalculator(str(path), non_conservative="forces")
    ours = cluster.copy()
    ours.calc = SymDiagCalculator(broken_model, symmetrize="T", corrections=["net_force", "net_torque"])
    np.testing.assert_allclose(exported.get_forces(), ours.get_forces(), atol=1e-10)
    assert exported.get_potential_energy() == pytest.approx(ours.get_potential_energy(), rel=1e-12)


def _direct_forces(path, atoms):
    """The exported model's own ``non_conservative_force`` output (our evaluation adds
    nothing to it; metatomic-ase's calculator would subtract the mean force itself)."""
    from ase_symdiag.backends.metatomic.evaluation import evaluate
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.structures import from_atoms

    return evaluate(ModelHandle.load(path), from_atoms(atoms), stress=False, direct=True).direct_forces[0]


def test_exported_direct_forces_are_free_of_net_force_and_torque(broken_model, corrected_file, cluster):
    forces = _direct_forces(corrected_file, cluster)
    r = cluster.positions - cluster.positions.mean(axis=0)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10
    assert np.abs(np.cross(r, forces).sum(axis=0)).max() < 1e-10
    raw = cluster.copy()
    raw.calc = SymDiagCalculator(broken_model)
    assert np.abs(raw.get_forces() - forces).max() > 1e-4  # the correction changed something


def test_torque_removal_of_a_linear_molecule(broken_model, corrected_file):
    """CO2: the inertia tensor is singular. CUDA's only least-squares driver (gels)
    assumes full rank, so the export solves through an eigendecomposition instead."""
    import torch
    from ase.build import molecule

    from ase_symdiag.backends.metatomic.corrected import symmetric_solve

    co2 = molecule("CO2")
    co2.positions += [0.0, 0.02, -0.01]
    co2.rotate(37, "x", center="COM")  # not along an axis
    forces = _direct_forces(corrected_file, co2)
    ours = co2.copy()
    ours.calc = SymDiagCalculator(broken_model, corrections=["net_force", "net_torque"])
    np.testing.assert_allclose(forces, ours.get_forces(), atol=1e-10)
    r = co2.positions - co2.positions.mean(axis=0)
    assert np.abs(np.cross(r, forces).sum(axis=0)).max() < 1e-10

    inertia = torch.tensor((r * r).sum() * np.eye(3) - r.T @ r)
    torque = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    expected = np.linalg.lstsq(inertia.numpy(), torque.numpy(), rcond=None)[0]  # minimum norm
    np.testing.assert_allclose(symmetric_solve(inertia, torque).numpy(), expected, atol=1e-10)
    gels = torch.linalg.lstsq(inertia, torque.unsqueeze(1), driver="gels").solution.squeeze(1)
    assert not np.allclose(gels.numpy(), expected, atol=1e-6)  # what CUDA would have given


def test_symmetrized_export_says_which_outputs_it_drops(tmp_path, capsys):
    from ase.build import bulk

    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.cli import main
    from ase_symdiag.reference.analytic import export_pair_potential

    model = tmp_path / "direct.pt"
    export_pair_potential(model, direct=True, features=True)
    crystal = tmp_path / "c.extxyz"
    bulk("Cu", "fcc", a=3.61, cubic=True).write(crystal)
    out = tmp_path / "sym.pt"
    assert main(["symmetrize", str(model), str(crystal), "--quadrature", "Th", "--export", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "not carried over: non_conservative_force" in printed
    assert "not carried over: mtt::features::planted (per-atom features" in printed
    description = ModelHandle.load(str(out)).model.metadata().description
    assert "Not carried over: non_conservative_stress" in description
    assert list(ModelHandle.load(str(out)).model.capabilities().outputs.keys()) == ["energy"]
