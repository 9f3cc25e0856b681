"""One entry point for every form of model (ase_symdiag.backends.dispatch)."""

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

import ase_symdiag
from ase_symdiag.backends.dispatch import ASEEvaluator, MetatomicEvaluator, TorchSimEvaluator, as_evaluator
from ase_symdiag.drivers.symmetrize import symmetrized_prediction
from ase_symdiag.errors import ModelError, UsageError
from ase_symdiag.o3.quadrature import lebedev_quadrature
from ase_symdiag.structures import from_atoms
from ase_symdiag.wrappers import SymmetrizedCalculator
from torchsim_planted import lennard_jones


@pytest.mark.parametrize("fixture", ["crystal", "cluster"])
def test_any_ase_calculator_is_checked_per_rotation(fixture, request):
    """EMT is exactly invariant: the general path measures round-off, with stress for
    the crystal only."""
    atoms = request.getfixturevalue(fixture)
    report = ase_symdiag.check_equivariance(EMT(), atoms, n_rotations=4, seed=0)
    s = report.summary()
    assert report.model == "EMT"
    assert s["energy_max_eV"] < 1e-10 and s["force_rms_per_component_eV_per_A"] < 1e-10
    assert (s["stress_max_GPa"] is not None) == bool(atoms.pbc.all())
    assert s["stress_max_GPa"] is None or s["stress_max_GPa"] < 1e-8


def test_as_evaluator_picks_the_backend(equivariant_model):
    assert isinstance(as_evaluator(equivariant_model), MetatomicEvaluator)
    assert isinstance(as_evaluator(lennard_jones()), TorchSimEvaluator)
    assert isinstance(as_evaluator(EMT()), ASEEvaluator)
    evaluator = as_evaluator(lennard_jones())
    assert as_evaluator(evaluator) is evaluator
    with pytest.raises(UsageError, match="device/dtype apply to metatomic models"):
        as_evaluator(lennard_jones(), device="cpu")
    with pytest.raises(ModelError, match="got list"):
        as_evaluator([1, 2])


def test_metatomic_only_options_refused_for_other_models(crystal):
    with pytest.raises(UsageError, match="options of metatomic models"):
        symmetrized_prediction(lennard_jones(), from_atoms(crystal), lebedev_quadrature(3), uncertainty=True)


def test_wrapping_an_equivariant_ase_calculator_changes_nothing(crystal):
    """metatomic-ase's SymmetrizedCalculator cannot wrap EMT; this one can, and the
    average of an invariant model is the model itself (up to round-off)."""
    plain = crystal.copy()
    plain.calc = EMT()
    wrapped = crystal.copy()
    wrapped.calc = SymmetrizedCalculator(EMT(), symmetrize=3, corrections=["net_force"])
    assert wrapped.get_potential_energy() == pytest.approx(plain.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(wrapped.get_forces(), plain.get_forces(), atol=1e-10)
    np.testing.assert_allclose(wrapped.get_stress(), plain.get_stress(), atol=1e-10)
    assert wrapped.calc.results["forces_std"].max() < 1e-10


def test_wrapped_metatomic_calculator_per_rotation_equals_batched(broken_model, crystal):
    """Averaging a SymDiagCalculator through its ASE interface (one call per
    operation) gives what the batched metatomic backend gives for the same file."""
    from ase_symdiag.calculator import SymDiagCalculator

    results = []
    for inner in (SymDiagCalculator(broken_model, dtype="float64"), broken_model):
        atoms = crystal.copy()
        atoms.calc = SymmetrizedCalculator(inner, symmetrize="O")
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    raw = crystal.copy()
    raw.calc = SymDiagCalculator(broken_model, dtype="float64")
    assert np.abs(raw.get_forces() - results[0][1]).max() > 1e-4  # the average is not the raw model


def test_top_level_names_resolve_to_the_general_drivers():
    from ase_symdiag.drivers import equivariance, spectrum, symmetrize

    assert ase_symdiag.check_equivariance is equivariance.check_equivariance
    assert ase_symdiag.structure_spectrum is spectrum.structure_spectrum
    assert ase_symdiag.symmetrized_prediction is symmetrize.symmetrized_prediction


def test_ase_calculator_is_checked_on_the_users_atoms(cluster):
    """The rotated copies keep ``info`` (a total charge) and per-atom arrays: a
    calculator that needs them is measured, not crashed on bare atoms."""
    from ase.calculators.calculator import Calculator, all_changes

    class NeedsCharge(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results = {"energy": float(self.atoms.info["charge"]), "forces": np.zeros((len(self.atoms), 3))}

    atoms = cluster.copy()
    atoms.info["charge"] = 2.0
    report = ase_symdiag.check_equivariance(NeedsCharge(), [atoms, atoms.copy()], n_rotations=2)
    assert len(report.structures) == 2 and report.summary()["energy_max_eV"] == 0.0
