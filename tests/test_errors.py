"""Every bad input gets a SymDiagError naming the problem, never a torch traceback."""

from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from ase import Atoms
from metatensor.torch import Labels, TensorMap
from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput, System

from ase_symdiag import (
    ModelError,
    ModelEvaluationError,
    RotationError,
    StructureError,
    SymDiagCalculator,
    check_equivariance,
)
from ase_symdiag.reference.analytic import export_pair_potential


def _no_torch_internals(message: str) -> None:
    assert "Traceback" not in message
    assert "torch/" not in message and ".cpp" not in message


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist") as info:
        SymDiagCalculator(tmp_path / "nope.pt")
    _no_torch_internals(str(info.value))


def test_corrupt_model_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a TorchScript archive" * 10)
    with pytest.raises(ModelError, match="could not load .* as a metatomic model") as info:
        SymDiagCalculator(path)
    _no_torch_internals(str(info.value))


class NoEnergy(torch.nn.Module):
    """A metatomic module with a 'feature' output only."""

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        return {}


def test_model_without_energy(tmp_path):
    capabilities = ModelCapabilities(
        outputs={"feature": ModelOutput(sample_kind="system")},
        atomic_types=[29],
        interaction_range=0.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    path = tmp_path / "feature.pt"
    AtomisticModel(NoEnergy().eval(), ModelMetadata(), capabilities).save(str(path))
    with pytest.raises(ModelError, match="has no 'energy' output"):
        SymDiagCalculator(path)


def test_unsupported_species(equivariant_model):
    atoms = Atoms("CuAu", positions=[[0, 0, 0], [0, 0, 2.5]])
    with pytest.raises(StructureError, match=r"does not support Au \(Z=79\)"):
        check_equivariance(equivariant_model, atoms, n_rotations=1)
    atoms.calc = SymDiagCalculator(equivariant_model)
    with pytest.raises(StructureError, match=r"Au \(Z=79\)"):
        atoms.get_potential_energy()


def test_empty_structure(equivariant_model):
    with pytest.raises(StructureError, match="empty"):
        check_equivariance(equivariant_model, Atoms(), n_rotations=1)
    with pytest.raises(StructureError, match="no structures given"):
        check_equivariance(equivariant_model, [], n_rotations=1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(equivariant_model, crystal, bad):
    crystal.positions[3, 1] = bad
    with pytest.raises(StructureError, match=r"NaN or infinite values \(atoms \[3\]\)"):
        check_equivariance(equivariant_model, crystal, n_rotations=1)
    crystal.calc = SymDiagCalculator(equivariant_model)
    with pytest.raises(StructureError, match="NaN or infinite"):
        crystal.get_forces()


def test_degenerate_cell(equivariant_model):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.3, 1.3, 0]], cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]], pbc=True)
    with pytest.raises(StructureError, match="degenerate along its periodic directions"):
        check_equivariance(equivariant_model, atoms, n_rotations=1)
    slab = Atoms("Cu", cell=[[3, 0, 0], [0, 0, 0], [0, 0, 10]], pbc=[True, True, False])
    with pytest.raises(StructureError, match="area"):
        check_equivariance(equivariant_model, slab, n_rotations=1)


def test_mixed_periodicity_the_model_refuses(tmp_path, slab):
    path = tmp_path / "bulk-only.pt"
    export_pair_potential(path, allow_mixed_pbc=False)
    with pytest.raises(ModelEvaluationError, match="does not support mixed periodic boundary") as info:
        check_equivariance(str(path), slab, n_rotations=1)
    assert "pbc=[True, True, False]" in str(info.value)
    _no_torch_internals(str(info.value))


@pytest.mark.parametrize(
    "matrix, message",
    [
        (np.diag([1.0, 1.0, 2.0]), "not orthogonal"),
        (np.ones((2, 2)), "shape"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, np.nan]], "NaN"),
        ("rotate", "numeric"),
    ],
)
def test_bad_rotation(equivariant_model, crystal, matrix, message):
    with pytest.raises(RotationError, match=message):
        check_equivariance(equivariant_model, crystal, n_rotations=1, rotations=matrix)


def test_bad_device_and_dtype(equivariant_model):
    with pytest.raises(ModelError, match="dtype must be"):
        SymDiagCalculator(equivariant_model, dtype="float16")
    with pytest.raises(ModelError, match="cannot run on device 'tpu'"):
        SymDiagCalculator(equivariant_model, device="tpu")
