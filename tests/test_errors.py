"""Every bad input gets a SymDiagError naming the problem, never a torch traceback."""

from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from ase import Atoms
from metatensor.torch import Labels, TensorBlock, TensorMap
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


# ---------------------------------------------------------------- non-finite outputs, coincident atoms


class NaNModel(torch.nn.Module):
    """Energy per system from the positions: ``nan * sum(x)`` (NaN energy and forces) or
    ``sqrt(0 * sum(x))`` (energy 0, forces 0 * inf = NaN)."""

    def __init__(self, nan_energy: bool):
        super().__init__()
        self.nan_energy = nan_energy

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        values = []
        for system in systems:
            total = system.positions.sum()
            values.append(total * float("nan") if self.nan_energy else torch.sqrt(total * 0.0))
        block = TensorBlock(
            values=torch.stack(values).reshape(-1, 1),
            samples=Labels("system", torch.arange(len(systems)).reshape(-1, 1)),
            components=[],
            properties=Labels("energy", torch.tensor([[0]])),
        )
        return {"energy": TensorMap(Labels("_", torch.tensor([[0]])), [block])}


@pytest.fixture(params=["nan_energy", "nan_forces"])
def nan_model(tmp_path, request):
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="system")},
        atomic_types=[29],
        interaction_range=0.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    path = tmp_path / f"{request.param}.pt"
    model = NaNModel(nan_energy=request.param == "nan_energy").eval()
    AtomisticModel(model, ModelMetadata(), capabilities).save(str(path))
    return str(path)


def test_non_finite_model_output_is_an_error_naming_the_structure(nan_model, crystal, cluster):
    """Before: NaN errors were dropped by max() and compared false with every limit."""
    from ase_symdiag.testing import assert_equivariant

    crystal.info["name"] = "fcc"
    with pytest.raises(ModelEvaluationError, match=r"non-finite values for 0:fcc: .*forces \(NaN") as info:
        check_equivariance(nan_model, [crystal, cluster], n_rotations=2)
    _no_torch_internals(str(info.value))
    with pytest.raises(ModelEvaluationError, match="non-finite"):
        assert_equivariant(nan_model, crystal, n_rotations=2)
    crystal.calc = SymDiagCalculator(nan_model)
    with pytest.raises(ModelEvaluationError, match="non-finite"):
        crystal.get_forces()


def test_non_finite_model_output_exits_2_in_one_line(nan_model, crystal, tmp_path, capsys):
    import ase.io

    from ase_symdiag.cli.app import main

    path, out = tmp_path / "s.extxyz", tmp_path / "report.json"
    ase.io.write(path, crystal)
    assert main(["check", nan_model, str(path), "--max-force-error", "1", "--json", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "returned non-finite values for 0:Cu32" in err
    assert not out.exists()


def test_non_finite_output_of_any_ase_calculator_is_an_error(crystal):
    """The general ASE path checks the same way (a corrected/symmetrized calculator, ASE's own)."""
    from ase.calculators.calculator import Calculator, all_changes

    from ase_symdiag.testing import assert_equivariant

    class NaNForces(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            forces = np.zeros((len(self.atoms), 3))
            forces[7, 1] = np.nan
            self.results = {"energy": 0.0, "forces": forces}

    with pytest.raises(ModelEvaluationError, match=r"for 0:Cu32: forces \(NaN; evaluation\(s\) \[0, 1, 2\], atoms \[7\]\)"):
        assert_equivariant(NaNForces(), crystal, n_rotations=2, force_tol=np.inf, energy_tol=np.inf)


@pytest.mark.parametrize("case", ["same position", "periodic image", "own image"])
def test_coincident_atoms_are_a_structure_error(equivariant_model, crystal, case):
    if case == "same position":
        atoms = Atoms("Cu3", positions=[[0, 0, 0], [0, 0, 0], [0, 0, 2.5]])
        message = r"atoms 0 and 1 are 0 Å apart"
    elif case == "periodic image":
        atoms = crystal
        atoms.positions[5] = atoms.positions[0] + atoms.cell[0] - atoms.cell[2] + [2e-4, 0, 0]
        message = r"atoms 0 and 5 are 0.0002 Å apart"
    else:
        atoms = Atoms("Cu", cell=[[5e-4, 0, 0], [0, 3, 0], [0, 0, 3]], pbc=True)
        message = r"atom 0 is 0.0005 Å from its own periodic image"
    with pytest.raises(StructureError, match=message + r"; atoms closer than 0.001 Å are coincident"):
        check_equivariance(equivariant_model, atoms, n_rotations=1)
    # the same input gives the same answer on every call (it gave 0.0, then NaN)
    atoms.calc = SymDiagCalculator(equivariant_model)
    for _ in range(2):
        with pytest.raises(StructureError, match="coincident"):
            atoms.get_forces()


def test_close_but_distinct_atoms_are_accepted(crystal):
    from ase_symdiag.structures import MIN_DISTANCE, from_atoms

    crystal.positions[5] = crystal.positions[0] + crystal.cell[0] + [2 * MIN_DISTANCE, 0, 0]
    assert len(from_atoms(crystal)) == 32


def _calculator(model: str, **options) -> SymDiagCalculator:
    return SymDiagCalculator(model, **options)


def _check_without_atoms(model: str) -> None:
    SymDiagCalculator(model).check_equivariance()


def _no_spectra(model: str) -> None:
    from ase_symdiag.metrics.adaptive import choose_quadrature

    choose_quadrature([])


def _no_operations(model: str) -> None:
    from ase_symdiag.metrics.equivariance import check_operations

    check_operations(0, seed=0)


def _testing_dtype(model: str) -> None:
    from ase_symdiag.testing import noise_floor

    noise_floor("float16")


def _testing_no_structures(model: str) -> None:
    from ase_symdiag.testing import assert_equivariant

    assert_equivariant(model, [])


def _testing_not_a_group(model: str) -> None:
    from ase_symdiag.o3.operations import haar_rotations
    from ase_symdiag.testing import assert_symmetrized_equivariant

    assert_symmetrized_equivariant(SymDiagCalculator(model), Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]]),
                                   rotations=haar_rotations(3, seed=1, include_inversion=False))


def _spectrum_one_check(model: str) -> None:
    from ase_symdiag.drivers.spectrum import structure_spectrum

    structure_spectrum(model, Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]]), lmax=1, n_check=1)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (_spectrum_one_check, "UsageError", "n_check must be 0 or >= 2"),
        (lambda model: _calculator(model, non_conservative="yes"), "UsageError", "non_conservative must be"),
        (lambda model: _calculator(model, non_conservative=True), "ModelError", "has no 'non_conservative_force'"),
        (lambda model: _calculator(model, non_conservative="stress"), "ModelError", "has no 'non_conservative_stress'"),
        (lambda model: _calculator(model, batch_size=0), "UsageError", "batch_size must be >= 1"),
        (_check_without_atoms, "UsageError", "no structures given"),
        (_no_spectra, "UsageError", "no spectra given"),
        (_no_operations, "UsageError", "no operations to check"),
        (_testing_dtype, "UsageError", "dtype must be"),
        (_testing_no_structures, "UsageError", "no structures given"),
        (_testing_not_a_group, "UsageError", "do not form a group"),
    ],
)
def test_library_input_errors_are_symdiag_errors(broken_model, call, error, match):
    """Bad keyword values and empty inputs of the library raise the named SymDiagError
    subclass (the CLI maps it to exit 2), still a ValueError for existing callers."""
    import ase_symdiag.errors as errors

    with pytest.raises(getattr(errors, error), match=match) as info:
        call(broken_model)
    assert isinstance(info.value, ValueError)
