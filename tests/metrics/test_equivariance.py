"""The equivariance check on real exported models: an exact control and planted breaking."""

import json

import numpy as np
import pytest

import planted
from conftest import BIAS, KAPPA

from ase_symdiag import check_equivariance, haar_rotations
from ase_symdiag.testing import assert_equivariant
from ase_symdiag.o3.transforms import rotate_tensors


@pytest.mark.parametrize("fixture", ["crystal", "triclinic", "cluster", "slab", "ethanol"])
def test_equivariant_control_at_round_off(equivariant_model, fixture, request):
    atoms = request.getfixturevalue(fixture)
    # the float64 noise-floor tolerances of ase_symdiag.testing, then the 1e-10 promise
    report = assert_equivariant(equivariant_model, atoms, n_rotations=8, seed=3)
    result = report.structures[0]
    assert result.forces.relative < 1e-10
    assert result.energy_max < 1e-10 * len(atoms)
    assert result.direct_forces.relative < 1e-10
    if atoms.pbc.all():
        assert result.stress.relative < 1e-10
        assert result.direct_stress.relative < 1e-10
    else:
        assert result.stress is None


def test_planted_reference_forces_match_finite_differences(crystal):
    analytic = planted.quadrupole_forces(crystal, KAPPA)
    numeric = planted.quadrupole_forces_fd(crystal, KAPPA, atoms_to_check=[0, 17])
    np.testing.assert_allclose(analytic[[0, 17]], numeric, atol=1e-8)


@pytest.mark.parametrize("fixture", ["crystal", "cluster"])
def test_planted_quadrupole_found_with_its_size(broken_model, fixture, request):
    atoms = request.getfixturevalue(fixture)
    operations = haar_rotations(6, seed=7)
    report = check_equivariance(broken_model, atoms, n_rotations=0, rotations=operations)
    result = report.structures[0]

    e0 = planted.quadrupole_energy(atoms, KAPPA)
    f0 = planted.quadrupole_forces(atoms, KAPPA)
    expected_de, expected_df = [], []
    for rotation in operations:
        moved = planted.rotated(atoms, rotation)
        expected_de.append(planted.quadrupole_energy(moved, KAPPA) - e0)
        df = planted.quadrupole_forces(moved, KAPPA) - f0 @ rotation.T
        expected_df.append(np.sqrt(np.mean(df**2)))

    # the breaking is big enough to matter, and it is found with its planted size
    assert max(np.abs(expected_de)) > 1e-3
    np.testing.assert_allclose(result.per_operation_energy, expected_de, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(result.forces.per_operation_rms, expected_df, rtol=1e-6)
    assert result.forces.relative > 1e-4


def test_broken_control_fails_the_assertion(broken_model, crystal):
    with pytest.raises(AssertionError, match="worst structure") as info:
        assert_equivariant(broken_model, crystal, n_rotations=4)
    assert "tolerance" in str(info.value)


def test_planted_quadrupole_stress(broken_model, crystal):
    # the invariant Morse part cancels: dS equals the planted term's stress change,
    # which we get from finite strain derivatives of the numpy energy
    operations = haar_rotations(2, seed=11)
    report = check_equivariance(broken_model, crystal, n_rotations=0, rotations=operations)

    def stress(atoms, h=1e-6):
        out = np.zeros((3, 3))
        volume = atoms.get_volume()
        for a in range(3):
            for b in range(3):
                values = []
                for sign in (1, -1):
                    strain = np.eye(3)
                    strain[a, b] += sign * h
                    moved = atoms.copy()
                    moved.set_cell(atoms.cell.array @ strain, scale_atoms=False)
                    moved.positions = atoms.positions @ strain
                    values.append(planted.quadrupole_energy(moved, KAPPA))
                out[a, b] = (values[0] - values[1]) / (2 * h) / volume
        return out

    s0 = stress(crystal)
    for k, rotation in enumerate(operations):
        expected = stress(planted.rotated(crystal, rotation)) - rotate_tensors(s0, rotation)
        assert report.structures[0].stress.per_operation[k] == pytest.approx(
            np.linalg.norm(expected), rel=1e-5
        )


def test_planted_direct_bias_found_with_its_size(direct_broken_model, crystal):
    operations = haar_rotations(4, seed=5)
    report = check_equivariance(direct_broken_model, crystal, n_rotations=0, rotations=operations)
    result = report.structures[0]
    # the conservative forces are exact; only the direct head is broken
    assert result.forces.relative < 1e-10
    w = planted.coordination_weights(crystal)
    b = np.array(BIAS)
    expected = [np.sqrt(np.sum(w**2) / (3 * len(w))) * np.linalg.norm(b - rotation @ b) for rotation in operations]
    np.testing.assert_allclose(result.direct_forces.per_operation_rms, expected, rtol=1e-8)


def test_batch_size_does_not_change_results(broken_model, crystal):
    small = check_equivariance(broken_model, crystal, n_rotations=5, seed=1, batch_size=1)
    large = check_equivariance(broken_model, crystal, n_rotations=5, seed=1, batch_size=16)
    np.testing.assert_allclose(
        small.structures[0].forces.per_operation_rms, large.structures[0].forces.per_operation_rms, rtol=1e-12
    )


def test_operations_seeded_and_mixed(equivariant_model, crystal):
    user = np.diag([1.0, -1.0, 1.0])  # a mirror plane
    report = check_equivariance(equivariant_model, crystal, n_rotations=4, seed=9, rotations=[user])
    again = check_equivariance(equivariant_model, crystal, n_rotations=4, seed=9)
    np.testing.assert_array_equal(report.operations[:4], again.operations)
    np.testing.assert_array_equal(report.operations[4], user)
    data = report.to_dict()
    assert data["n_operations"] == 5
    assert data["n_improper"] == 3  # two Haar-improper and the mirror
    json.dumps(data)


def test_report_table_and_summary(broken_model, crystal, cluster):
    report = check_equivariance(broken_model, [crystal, cluster], n_rotations=3)
    table = report.table()
    assert "dF rms/comp eV/A" in table and "dF/max(F,1meV/A)" in table and "worst" in table
    assert "0:Cu32" in table and "1:Cu13" in table
    summary = report.summary()
    assert summary["force_rms_per_component_eV_per_A"] == max(r.forces.rms_per_component for r in report.structures)
    assert summary["stress_max_GPa"] == report.structures[0].stress.max_gpa
    # the keys of earlier versions still read, but only the current ones are written
    assert summary["force_relative"] == summary["force_rms_per_component_relative"]
    data = report.to_dict()
    assert "force_relative" not in data["summary"] and set(data["summary"]) == set(data["definitions"])
    assert data["relative_force_floor_eV_per_A"] == 1e-3


def test_float32_run_is_noise_level(equivariant_model, crystal):
    report = check_equivariance(equivariant_model, crystal, n_rotations=4, dtype="float32")
    assert report.dtype == "float32"
    # float32 round-off: well below 1e-4 relative, well above float64's
    assert 1e-10 < report.structures[0].forces.relative < 1e-4


# ---------------------------------------------------------------- reductions, relative floor, normalisation


def test_reductions_over_structures_keep_nan():
    """max() kept or dropped a NaN by its position, and 'nan > limit' is false."""
    import argparse
    import math

    from ase_symdiag.cli.check import gate_failures
    from ase_symdiag.metrics.equivariance import EquivarianceReport, StructureErrors, worst

    assert worst([1.0, math.nan]) != worst([1.0, math.nan])  # NaN, wherever it sits
    assert math.isnan(worst([math.nan, 1.0])) and worst([None, 2.0, 1.0]) == 2.0 and worst([None]) is None
    report = EquivarianceReport("m", "float64", "cpu", 0, np.eye(3)[None])
    for label, value in (("ok", 1e-12), ("broken", math.nan)):
        report.structures.append(StructureErrors(label, 2, False, value, value, [value]))
    summary = report.summary()
    assert math.isnan(summary["energy_max_meV_per_atom"])
    args = argparse.Namespace(max_force_error=None, max_relative_force_error=None, max_energy_error=1.0, max_stress_error=None)
    thresholds, failures = gate_failures(summary, args)
    assert thresholds == {"energy_max_meV_per_atom": 1.0}
    assert failures == ["energy error nan meV/atom exceeds --max-energy-error 1"]


def test_relative_force_error_has_a_floor(equivariant_model, broken_model, crystal):
    """A perfect crystal has ~1e-15 eV/Å forces: round-off over them read as 200 %."""
    from ase.build import bulk

    from ase_symdiag.metrics.equivariance import RELATIVE_FORCE_FLOOR

    perfect = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    result = check_equivariance(equivariant_model, perfect, n_rotations=4).structures[0]
    assert result.forces.reference_rms_per_component < 1e-13  # forces are round-off
    assert result.forces.relative == pytest.approx(result.forces.rms_per_component / RELATIVE_FORCE_FLOOR)
    assert result.forces.relative < 1e-10
    # above the floor the denominator is the RMS force component itself
    broken = check_equivariance(broken_model, crystal, n_rotations=4).structures[0].forces
    assert broken.reference_rms_per_component > RELATIVE_FORCE_FLOOR
    assert broken.relative == pytest.approx(broken.rms_per_component / broken.reference_rms_per_component, rel=1e-14)


def test_spectrum_and_check_share_the_force_normalisation(broken_model, cluster):
    """Spectrum tables printed a per-atom vector norm, check a per-component RMS (sqrt 3)."""
    from ase_symdiag import ModelHandle
    from ase_symdiag.metrics.adaptive import residual_power
    from ase_symdiag.metrics.spectrum import StructureSpectrum, output_spectrum, spectrum_table
    from ase_symdiag.drivers.symmetrize import symmetrized_prediction
    from ase_symdiag.o3.quadrature import group_quadrature, identity_quadrature
    from ase_symdiag.structures import from_atoms

    handle = ModelHandle.load(broken_model)
    quadrature = group_quadrature("O")  # O_h: uniform weights, contains the identity
    prediction = symmetrized_prediction(handle, from_atoms(cluster), quadrature)
    samples = prediction.samples["forces"]  # g(R_k) = F(R_k x) R_k, (48, N, 3)
    forces = output_spectrum("forces", samples, quadrature, 1)
    report = check_equivariance(handle, cluster, n_rotations=0, rotations=quadrature.rotations)
    per_op = np.asarray(report.structures[0].forces.per_operation_rms_per_component)
    # check: dF(R) R = g(R) - g(1), so <rms_R^2> = Var + |g(1) - <g>|^2, per component
    identity = int(np.argmin(np.abs(quadrature.rotations - np.eye(3)).sum(axis=(1, 2))))
    offset = np.mean((samples[identity] - prediction.mean["forces"]) ** 2)
    assert np.sum(quadrature.weights * per_op**2) == pytest.approx(forces.rms_breaking**2 + offset, rel=1e-10)
    assert forces.rms_breaking > 1e-3
    # the table prints that same number, and so does the adaptive residual without averaging
    spectrum = StructureSpectrum(label="c", n_atoms=len(cluster), lmax=1, quadrature="Oh", outputs={"forces": forces})
    row = next(line for line in spectrum_table([spectrum]).splitlines() if line.startswith("c "))
    assert float(row.split()[2]) == pytest.approx(forces.rms_breaking, rel=1e-2)
    # the adaptive choice's force residual: its power over 3 (per component)
    leftover = residual_power(forces, identity_quadrature())
    assert np.sqrt(leftover / 3.0) == pytest.approx(forces.rms_breaking, rel=1e-10)


def test_metrics_import_no_ase():
    """The ASE-calculator path lives in backends/ase.py; GPa is a constant here."""
    import subprocess
    import sys

    from ase.units import GPa

    from ase_symdiag.o3.transforms import GPA

    code = (
        "import sys, ase_symdiag.metrics.equivariance, ase_symdiag.metrics.symmetrize, "
        "ase_symdiag.backends.samples; print('ase' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert GPA == GPa
    # the ASE path lives in the backend only: no deprecated names resolve through the metric
    import ase_symdiag.metrics.equivariance as metrics

    for name in ("rotated_atoms", "calculator_predictions", "calculator_equivariance"):
        assert not hasattr(metrics, name), name
