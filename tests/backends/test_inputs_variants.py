"""Models as users have them: requested inputs, energy variants, uncertainty, extensions.

:class:`InputModel` is a small hand-made metatomic model whose energy reads the inputs
it requests from the ASE Atoms (masses, velocities, the total charge),

    E = c_variant * sum_i m_i (v_i . x_i) + q_total,

so it is invariant only if the velocities turn with the structure, and its forces
``-c m_i v_i`` are known exactly. It has two energy variants (``energy/low``,
``energy/high``: c = 1 and 2) with no default, and a per-variant ``energy_uncertainty``.
"""

from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from ase import Atoms
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput, System

from ase_symdiag import ModelError, StructureError, SymDiagCalculator
from ase_symdiag.backends.metatomic.evaluation import evaluate
from ase_symdiag.backends.metatomic.inputs import input_arrays
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.cli.app import main
from ase_symdiag.o3.operations import haar_rotations
from ase_symdiag.structures import from_atoms

VARIANTS = {"low": 1.0, "high": 2.0}


class InputModel(torch.nn.Module):
    def __init__(self, default: bool = False) -> None:
        super().__init__()
        self.default = default

    def requested_inputs(self) -> Dict[str, ModelOutput]:
        return {
            "mass": ModelOutput(unit="u", sample_kind="atom"),
            "velocity": ModelOutput(unit="(eV/u)^(1/2)", sample_kind="atom"),
            "charge": ModelOutput(unit="e", sample_kind="system"),
        }

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        energies: List[torch.Tensor] = []
        for system in systems:
            mass = system.get_data("mass").block().values.reshape(-1)
            velocity = system.get_data("velocity").block().values.reshape(-1, 3)
            charge = system.get_data("charge").block().values.reshape(-1)
            energies.append((mass * (velocity * system.positions).sum(dim=1)).sum() + charge.sum())
        energy = torch.stack(energies).reshape(-1, 1)
        samples = Labels("system", torch.arange(len(systems), dtype=torch.int32).reshape(-1, 1))
        result: Dict[str, TensorMap] = {}
        for name in outputs.keys():
            scale = 1.0
            if name.endswith("/high"):
                scale = 2.0
            values = energy * scale
            if name.startswith("energy_uncertainty"):
                values = 0.1 * torch.abs(values) + 0.5
            block = TensorBlock(values, samples, [], Labels("energy", torch.tensor([[0]])))
            result[name] = TensorMap(Labels("_", torch.tensor([[0]])), [block])
        return result


def export_input_model(path, default: bool = False) -> str:
    outputs = {}
    for variant in VARIANTS:
        outputs[f"energy/{variant}"] = ModelOutput(unit="eV", sample_kind="system", description=f"c = {VARIANTS[variant]}")
        outputs[f"energy_uncertainty/{variant}"] = ModelOutput(unit="eV", sample_kind="system", description=variant)
    if default:
        outputs["energy"] = ModelOutput(unit="eV", sample_kind="system")
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=[1, 8, 29],
        interaction_range=0.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    model = AtomisticModel(InputModel(default).eval(), ModelMetadata(), capabilities)
    model.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def input_model(tmp_path_factory):
    return export_input_model(tmp_path_factory.mktemp("inputs") / "inputs.pt")


@pytest.fixture
def moving():
    atoms = Atoms("OH2Cu", positions=[[0, 0, 0], [0.9, 0.1, 0.0], [-0.3, 0.9, 0.1], [2.0, 1.0, -1.0]])
    atoms.set_velocities(np.random.default_rng(3).normal(size=(4, 3)))
    atoms.info["charge"] = -1.0
    return atoms


def _expected(atoms, scale):
    energy = scale * (np.sum(atoms.get_masses() * np.einsum("ia,ia->i", atoms.get_velocities(), atoms.positions))
                      + atoms.info.get("charge", 0.0))
    return energy, -scale * atoms.get_masses()[:, None] * atoms.get_velocities()


def test_variant_is_required_when_there_is_no_default(input_model):
    with pytest.raises(ModelError, match=r"several energy variants \(high, low\).*--energy-variant"):
        ModelHandle.load(input_model)
    with pytest.raises(ModelError, match=r"no energy variant 'pbe' \(its variants: high, low\)"):
        ModelHandle.load(input_model, variant="pbe")
    handle = ModelHandle.load(input_model, variant="high")
    assert handle.energy_key == "energy/high" and handle.uncertainty_key == "energy_uncertainty/high"
    assert sorted(handle.requested_inputs) == ["charge", "mass", "velocity"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_calculator_forwards_inputs_and_variant(input_model, moving, variant):
    moving.calc = SymDiagCalculator(input_model, variant=variant)
    energy, forces = _expected(moving, VARIANTS[variant])
    assert moving.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(moving.get_forces(), forces, rtol=1e-12, atol=1e-12)
    assert moving.calc.results["energy_uncertainty"] == pytest.approx(0.1 * abs(energy) + 0.5, rel=1e-12)
    assert moving.calc.parameters["variant"] == variant


def test_vector_inputs_turn_with_the_structure(input_model, moving):
    """With velocities rotated along, E(Rx, Rv) = E(x, v) and F(Rx) = F(x) R^T exactly."""
    handle = ModelHandle.load(input_model, variant="low")
    rotations = haar_rotations(6, seed=1)  # proper and improper
    arrays = input_arrays(handle, moving)
    predictions = evaluate(handle, from_atoms(moving), rotations, inputs=arrays, uncertainty=True)
    energy, forces = _expected(moving, 1.0)
    np.testing.assert_allclose(predictions.energy, energy, rtol=1e-12)
    np.testing.assert_allclose(predictions.forces, forces[None] @ rotations.transpose(0, 2, 1), atol=1e-12)
    np.testing.assert_allclose(predictions.energy_uncertainty, 0.1 * abs(energy) + 0.5, rtol=1e-12)


def test_symmetrized_calculator_with_inputs(input_model, moving):
    moving.calc = SymDiagCalculator(input_model, variant="low", symmetrize=2)
    energy, forces = _expected(moving, 1.0)
    assert moving.get_potential_energy() == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(moving.get_forces(), forces, atol=1e-10)
    assert moving.calc.results["forces_std"].max() < 1e-10


def test_bare_structure_gets_default_inputs(input_model, moving):
    """Without Atoms: standard masses, zero velocities, neutral -> zero energy."""
    handle = ModelHandle.load(input_model, variant="low")
    predictions = evaluate(handle, from_atoms(moving))
    assert predictions.energy[0] == 0.0


def test_missing_ase_array_is_a_structure_error(tmp_path, moving):
    class ArrayModel(InputModel):
        def requested_inputs(self) -> Dict[str, ModelOutput]:
            return {"ase::arrays::spin": ModelOutput(sample_kind="atom")}

    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="system")}, atomic_types=[1, 8, 29],
        interaction_range=0.0, length_unit="angstrom", supported_devices=["cpu"], dtype="float64",
    )
    path = tmp_path / "array.pt"
    AtomisticModel(ArrayModel().eval(), ModelMetadata(), capabilities).save(str(path))
    handle = ModelHandle.load(path)
    with pytest.raises(StructureError, match="no per-atom array 'spin'"):
        input_arrays(handle, moving)


def test_unknown_input_is_a_model_error(tmp_path):
    class OddModel(InputModel):
        def requested_inputs(self) -> Dict[str, ModelOutput]:
            return {"mtt::whatever": ModelOutput(sample_kind="atom")}

    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="system")}, atomic_types=[1],
        interaction_range=0.0, length_unit="angstrom", supported_devices=["cpu"], dtype="float64",
    )
    path = tmp_path / "odd.pt"
    AtomisticModel(OddModel().eval(), ModelMetadata(), capabilities).save(str(path))
    with pytest.raises(ModelError, match="requests the atom input 'mtt::whatever'"):
        ModelHandle.load(path)


def test_extensions_directory_must_exist(input_model, tmp_path):
    with pytest.raises(ModelError, match="extensions directory .* does not exist"):
        ModelHandle.load(input_model, variant="low", extensions_directory=tmp_path / "nope")
    handle = ModelHandle.load(input_model, variant="low", extensions_directory=tmp_path)
    assert handle.energy_key == "energy/low"


def test_cli_variant(input_model, moving, tmp_path, capsys):
    import ase.io

    path = tmp_path / "moving.extxyz"
    ase.io.write(path, moving)
    assert main(["check", input_model, str(path), "-n", "2", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--energy-variant" in err[0]
    assert main(["spectrum", input_model, str(path), "--lmax", "1", "--energy-variant", "high", "-q"]) == 0
    assert main(["compare", input_model, str(path), "--energy-variant", "low", "--variants", "raw,sym:1", "-n", "2"]) == 0


def test_symmetrized_export_turns_the_requested_inputs(tmp_path, moving):
    """E = c sum_i m_i v_i . x_i + q is invariant when v turns with x: the export's
    average then equals the raw energy (it would average to q if the copies kept
    the engine's velocities), and its forces are -c m_i v_i."""
    from metatomic_ase import MetatomicCalculator

    from ase_symdiag.backends.metatomic.export import export_symmetrized

    path = export_input_model(tmp_path / "inputs.pt", default=True)
    export_symmetrized(path, tmp_path / "sym.pt", quadrature="Oh")
    atoms = moving.copy()
    atoms.calc = MetatomicCalculator(str(tmp_path / "sym.pt"), check_consistency=True)
    energy, forces = _expected(moving, 1.0)
    assert abs(energy - moving.info["charge"]) > 0.1
    assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-12)
