"""Rotational spread as an uncertainty: the metrics on synthetic data with known
answers, and the command end to end on a shipped model."""

import json

import ase.io
import numpy as np
import pytest
from repo import ROOT

from ase_symdiag.cli.app import main
from ase_symdiag.drivers.uncertainty import rotational_uncertainty
from ase_symdiag.metrics.uncertainty import (
    CALIBRATION_LEVELS,
    SpreadQuality,
    calibration_curve,
    coverage,
    reference_values,
    spearman,
)

ETHANOL_MODEL = ROOT / "models" / "ethanol-xtb-augmented.pt"
ETHANOL_DATA = ROOT / "models" / "data" / "ethanol-xtb.extxyz"


@pytest.fixture
def gaussian(rng):
    """Errors drawn as N(0, sigma^2) with sigma varying over two decades."""
    sigma = rng.uniform(0.05, 5.0, 40000)
    return rng.normal(0.0, sigma), sigma


@pytest.mark.parametrize("k, expected, tolerance", [(1, 0.6827, 0.01), (2, 0.9545, 0.005), (3, 0.9973, 0.002)])
def test_gaussian_errors_are_covered_as_a_gaussian(gaussian, k, expected, tolerance):
    error, sigma = gaussian
    assert coverage(error, sigma, k) == pytest.approx(expected, abs=tolerance)


def test_calibration_curve_on_and_below_the_diagonal(gaussian):
    error, sigma = gaussian
    nominal, observed = calibration_curve(error, sigma)
    np.testing.assert_allclose(nominal, CALIBRATION_LEVELS)
    np.testing.assert_allclose(observed, nominal, atol=0.015)  # calibrated
    _, overconfident = calibration_curve(error, sigma / 2)  # spread too small by 2
    assert np.all(overconfident < nominal - 0.02)


def test_spearman_known_cases(rng):
    x = rng.uniform(0, 1, 200)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0, abs=1e-12)  # monotone, not linear
    assert spearman(x, -x**3) == pytest.approx(-1.0, abs=1e-12)
    assert abs(spearman(rng.normal(size=20000), rng.normal(size=20000))) < 0.03  # independent
    assert spearman(np.zeros(10), x[:10]) is None  # a constant spread ranks nothing
    ties = np.array([1.0, 2.0, 2.0, 3.0])
    from scipy.stats import spearmanr

    assert spearman(ties, [1.0, 3.0, 2.0, 4.0]) == pytest.approx(spearmanr(ties, [1.0, 3.0, 2.0, 4.0])[0], abs=1e-12)


def test_magnitude_baseline(rng):
    """Errors that grow with the force magnitude: the magnitude ranks them perfectly,
    a spread that is independent noise does not."""
    magnitude = rng.uniform(0.1, 10.0, 500)
    error = 0.1 * magnitude
    noise = rng.uniform(0.1, 1.0, 500)
    quality = SpreadQuality.measure("forces", error, noise, error, noise, magnitude=magnitude)
    assert quality.baseline == pytest.approx(1.0, abs=1e-12)
    assert abs(quality.spearman) < 0.15
    assert SpreadQuality.measure("energy", error, noise, error, noise).baseline is None


def test_round_off_spread_has_no_correlation(rng):
    """The spread of an equivariant model is round-off: its ranks are noise and no
    correlation is reported, whatever numbers the noise would give."""
    error = rng.normal(size=50)
    noise = 1e-15 * rng.uniform(size=50)
    quality = SpreadQuality.measure("forces", np.abs(error), noise, error, noise, round_off=1e-13)
    assert quality.spearman is None and quality.undefined == "round-off"
    assert "undefined (round-off)" in quality.row()
    assert SpreadQuality.measure("forces", np.abs(error), noise, error, noise).spearman is not None


def test_shipped_model_end_to_end(tmp_path, capsys):
    """Spreads are the calculator's forces_std/energy_std; errors against the stored
    reference; the table, JSON and calibration plot."""
    from ase_symdiag import SymDiagCalculator

    out, plot = tmp_path / "u.json", tmp_path / "u.png"
    code = main([
        "uncertainty", str(ETHANOL_MODEL), str(ETHANOL_DATA), "--index", ":3", "--quadrature", "O", "-q",
        "--json", str(out), "--plot", str(plot),
    ])
    assert code == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    assert "forces per atom: rotational std" in table and "within 1 std" in table
    data = json.loads(out.read_text())
    assert data["quadrature"] == "Oh" and data["n_structures"] == 3
    assert plot.read_bytes()[:4] == b"\x89PNG"
    qualities = {q["quantity"]: q for q in data["qualities"]}
    per_atom = qualities["forces per atom: rotational std"]
    assert per_atom["n"] == 27 and per_atom["spearman"] is not None and -1 <= per_atom["spearman"] <= 1
    atoms = ase.io.read(ETHANOL_DATA, "0")
    energy, forces = reference_values(atoms)
    row = data["structures"][0]
    calc = SymDiagCalculator(str(ETHANOL_MODEL), symmetrize="O")
    probe = atoms.copy()
    probe.calc = calc
    symmetrized_forces = probe.get_forces()
    std = calc.results["forces_std"]
    # --prediction symmetrized: the error of the calculator's averaged forces
    from ase_symdiag.structures import from_atoms

    sym = rotational_uncertainty(str(ETHANOL_MODEL), [from_atoms(atoms)], [energy], [forces], quadrature="O", prediction="symmetrized")
    assert sym.per_structure[0]["force_error_rms_meV_per_A"] == pytest.approx(
        1000 * np.sqrt(np.mean((symmetrized_forces - forces) ** 2)), rel=1e-5
    )
    assert row["force_std_rms_meV_per_A"] == pytest.approx(1000 * np.sqrt(np.mean(std**2)), rel=1e-6)
    # float32 energies of ~300 eV: the batch a copy runs in moves them by ~1e-6 eV
    assert row["energy_std_meV_per_atom"] == pytest.approx(1000 * calc.results["energy_std"] / 9, rel=1e-3)
    raw = atoms.copy()
    raw.calc = SymDiagCalculator(str(ETHANOL_MODEL))
    assert row["force_error_rms_meV_per_A"] == pytest.approx(
        1000 * np.sqrt(np.mean((raw.get_forces() - forces) ** 2)), rel=1e-5
    )
    # float32 round-off of a 309 eV energy: 4e-5 eV = 4e-3 meV/atom
    assert row["energy_error_meV_per_atom"] == pytest.approx(1000 * (raw.get_potential_energy() - energy) / 9, abs=0.02)


def test_equivariant_model_reports_no_correlation(equivariant_model, cluster):
    """An exactly equivariant model: spreads at round-off, no correlation claimed;
    the errors are still measured."""
    from ase_symdiag.structures import from_atoms

    structures = [from_atoms(cluster)]
    rng = np.random.default_rng(0)
    forces = [rng.normal(size=(len(cluster), 3))]
    report = rotational_uncertainty(equivariant_model, structures, [0.0], forces, quadrature="lebedev:2")
    by_name = {q.quantity: q for q in report.qualities}
    per_atom = by_name["forces per atom: rotational std"]
    assert per_atom.spearman is None and per_atom.undefined == "round-off"
    assert per_atom.spread_rms < 1e-9 and per_atom.error_rms > 100  # meV/A


def test_structure_without_reference_is_named(equivariant_model, cluster):
    from ase_symdiag.errors import StructureError
    from ase_symdiag.structures import from_atoms

    with pytest.raises(StructureError, match="cluster-13: no reference energy or forces"):
        rotational_uncertainty(equivariant_model, [from_atoms(cluster, "cluster-13")], [None], [None])


def test_llpr_uncertainty_is_measured_alongside(metatrain_llpr, tmp_path, capsys):
    """A metatrain PET wrapped by LLPR: its energy_uncertainty is measured on the same
    structures as the rotational spread, and is the model's own output."""
    from ase_symdiag.backends.metatomic.evaluation import evaluate
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.structures import read_structures

    model, data = metatrain_llpr
    out = tmp_path / "u.json"
    assert main(["uncertainty", model, str(data), "--index", ":4", "--quadrature", "O", "-q", "--json", str(out)]) == 0
    assert "energy: model's energy_uncertainty" in capsys.readouterr().out
    report = json.loads(out.read_text())
    own = {q["quantity"]: q for q in report["qualities"]}["energy: model's energy_uncertainty"]
    assert own["n"] == 4 and own["spread_rms"] > 0
    handle = ModelHandle.load(model)
    structure = read_structures(str(data), index="0")[0]
    expected = evaluate(handle, structure, forces=False, stress=False, uncertainty=True).energy_uncertainty[0]
    assert report["structures"][0]["energy_uncertainty_meV_per_atom"] == pytest.approx(1000 * expected / 9, rel=1e-10)
