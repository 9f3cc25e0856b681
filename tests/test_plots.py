"""The figures of the metric reports (``ase_symdiag/plots.py``): matplotlib only on
request, and each figure draws the report's numbers."""

import subprocess
import sys

import numpy as np
import pytest
from repo import ROOT
from scipy.special import erf, erfinv

import ase_symdiag.report
from ase_symdiag.metrics.uncertainty import SpreadQuality, UncertaintyReport
from ase_symdiag.plots import plot_calibration


def test_importing_plots_loads_no_matplotlib():
    """A fresh interpreter that imports the module has not loaded matplotlib."""
    code = "import sys, ase_symdiag.plots\nprint('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"


@pytest.fixture
def calibration_report(rng):
    """Errors drawn as N(0, sigma^2): measured against sigma (on the diagonal) and against
    sigma / 2 (overconfident, its curve below the diagonal)."""
    sigma = rng.uniform(0.1, 2.0, 4000)
    error = rng.normal(0.0, sigma)
    qualities = [
        SpreadQuality.measure(name, np.abs(error), spread, error, spread)
        for name, spread in (("gaussian", sigma), ("overconfident", sigma / 2))
    ]
    return UncertaintyReport(model="planted", quadrature="Oh", prediction="raw", n_structures=1, qualities=qualities)


def test_calibration_plot_draws_each_spread_on_its_curve(calibration_report, monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr(ase_symdiag.report, "atomic_savefig", lambda figure, path: figures.append(figure))
    plot_calibration(calibration_report, str(tmp_path / "unused.png"))
    lines = {line.get_label(): line for line in figures[0].axes[0].get_lines()}
    assert set(lines) == {"calibrated", "gaussian", "overconfident"}  # the diagonal is "calibrated"
    np.testing.assert_array_equal(lines["calibrated"].get_ydata(), lines["calibrated"].get_xdata())
    for quality in calibration_report.qualities:
        nominal, observed = quality.calibration
        np.testing.assert_array_equal(lines[quality.quantity].get_xdata(), nominal)
        np.testing.assert_array_equal(lines[quality.quantity].get_ydata(), observed)
    gaussian = lines["gaussian"]
    # Gaussian errors against their own sigma: on the diagonal within sampling noise
    # (binomial std <= 0.008 for 4000 draws); against sigma / 2 the fraction within
    # z_p sigma / 2 is erf(erfinv(p) / 2), below the diagonal
    assert np.max(np.abs(gaussian.get_ydata() - gaussian.get_xdata())) < 0.04
    overconfident = lines["overconfident"]
    expected = erf(erfinv(overconfident.get_xdata()) / 2)
    assert np.max(np.abs(overconfident.get_ydata() - expected)) < 0.04
    assert np.all(expected < overconfident.get_xdata() - 0.02)


def test_calibration_plot_writes_an_image(calibration_report, tmp_path):
    path = tmp_path / "calibration.png"
    plot_calibration(calibration_report, str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"
