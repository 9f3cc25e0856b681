"""Exported symmetrized models: loadable by metatomic-ase, equal to in-process averaging."""

from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, System

from model_outputs import in_process_average, run_outputs

from ase_symdiag import SymDiagCalculator, check_equivariance
from ase_symdiag.backends.metatomic.export import export_symmetrized


@pytest.fixture(scope="module")
def symmetrized_file(broken_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "symmetrized-T.pt"
    export_symmetrized(broken_model, path, quadrature="T", batch_size=5)
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
        export_symmetrized(broken_model, tmp_path / "x.pt", quadrature=None)


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

    from ase_symdiag.backends.rigid import symmetric_solve

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


class UncertainModel(torch.nn.Module):
    """Energy 0 and ``energy_uncertainty`` = sum_i (a . x_i)^2: lambda = 0 and 2 content,
    whose average over a degree-2 quadrature is |a|^2/3 sum_i |x_i|^2 exactly."""

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        axis = torch.tensor([3.0, -12.0, 5.0], dtype=torch.float64) / 10.0  # exact in TorchScript
        values: List[torch.Tensor] = []
        for system in systems:
            values.append(((system.positions @ axis) ** 2).sum())
        uncertainty = torch.stack(values).reshape(-1, 1)
        samples = Labels("system", torch.arange(len(systems), dtype=torch.int32).reshape(-1, 1))
        result: Dict[str, TensorMap] = {}
        for name in outputs.keys():
            block_values = uncertainty if name == "energy_uncertainty" else 0.0 * uncertainty
            block = TensorBlock(block_values, samples, [], Labels("energy", torch.tensor([[0]])))
            result[name] = TensorMap(Labels("_", torch.tensor([[0]])), [block])
        return result


def test_export_averages_the_energy_uncertainty(tmp_path, cluster):
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata

    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="system"),
                 "energy_uncertainty": ModelOutput(unit="eV", sample_kind="system")},
        atomic_types=[1, 6, 8, 29], interaction_range=0.0, length_unit="angstrom",
        supported_devices=["cpu"], dtype="float64",
    )
    model = AtomisticModel(UncertainModel().eval(), ModelMetadata(), capabilities)
    exported = export_symmetrized(model, tmp_path / "sym.pt", quadrature="Th")
    assert "energy_uncertainty" in exported.capabilities().outputs
    raw, averaged = (run_outputs(m, cluster, ["energy_uncertainty"]) for m in (model, str(tmp_path / "sym.pt")))
    axis = np.array([0.3, -1.2, 0.5])
    assert raw["energy_uncertainty"][0, 0] == pytest.approx(np.sum((cluster.positions @ axis) ** 2), rel=1e-12)
    expected = axis @ axis / 3 * np.sum(cluster.positions**2)
    assert averaged["energy_uncertainty"][0, 0] == pytest.approx(expected, rel=1e-12)
    assert abs(raw["energy_uncertainty"][0, 0] - expected) > 1e-3 * expected  # the planted lambda = 2 part was there


@pytest.fixture(scope="module")
def planted_features(tmp_path_factory):
    from ase_symdiag.reference.analytic import export_pair_potential

    path = tmp_path_factory.mktemp("features") / "direct.pt"
    export_pair_potential(path, direct=True, features=True)
    return str(path)


def test_export_averages_planted_features_to_their_invariant_part(planted_features, cluster, tmp_path):
    """Channels 0/1/2 of ``mtt::features::planted`` are lambda = 0, 1, 2: a degree-2
    average keeps channel 0 and removes the other two, and equals the average of the
    raw features over the rotated copies."""
    name = "mtt::features::planted"
    exported = tmp_path / "sym.pt"
    export_symmetrized(planted_features, exported, quadrature="Th")
    raw = run_outputs(planted_features, cluster, [name])[name]
    averaged = run_outputs(str(exported), cluster, [name])[name]
    assert np.abs(raw[:, 1:]).max() > 0.1
    np.testing.assert_allclose(averaged[:, 0], raw[:, 0], rtol=1e-12)
    np.testing.assert_allclose(averaged[:, 1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(averaged, in_process_average(planted_features, cluster, name, "Th"), atol=1e-12)


def test_carried_features_follow_selected_atoms(planted_features, crystal, tmp_path):
    name = "mtt::features::planted"
    exported = tmp_path / "sym.pt"
    export_symmetrized(planted_features, exported, quadrature="Th")
    everything = run_outputs(str(exported), crystal, [name])[name]
    selected = Labels(["system", "atom"], torch.tensor([[0, 1], [0, 3]], dtype=torch.int32))
    some = run_outputs(str(exported), crystal, [name], selected_atoms=selected)[name]
    np.testing.assert_allclose(some, everything[[1, 3]], atol=1e-14)


def test_symmetrized_export_says_which_outputs_it_carries_and_drops(planted_features, tmp_path, capsys):
    from ase.build import bulk

    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.cli import main

    crystal = tmp_path / "c.extxyz"
    bulk("Cu", "fcc", a=3.61, cubic=True).write(crystal)
    out = tmp_path / "sym.pt"
    assert main(["symmetrize", planted_features, str(crystal), "--quadrature", "Th", "--export", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "outputs: energy, mtt::features::planted" in printed
    assert "not carried over: non_conservative_force" in printed
    assert "mtt::features::planted (" not in printed
    description = ModelHandle.load(str(out)).model.metadata().description
    assert "Not carried over: non_conservative_stress" in description
    assert list(ModelHandle.load(str(out)).model.capabilities().outputs.keys()) == ["energy", "mtt::features::planted"]
