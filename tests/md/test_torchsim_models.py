"""Variants of the TorchSim engine (ase_symdiag.md.torchsim_models): an adaptive
quadrature that meets no tolerance is said so, not run as if adequate (issue 20)."""

import json
import os

import pytest
from ase.cluster import Icosahedron
from repo import ROOT

pytest.importorskip("torch_sim")
pytest.importorskip("metatomic_torchsim")

import ase_symdiag.md.torchsim_models as torchsim_models  # noqa: E402
from ase_symdiag.cli.app import main  # noqa: E402

MODEL = os.path.join(str(ROOT), "models", "morse-broken-l2.pt")


@pytest.fixture
def cluster_file(tmp_path):
    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=3)
    path = str(tmp_path / "cluster.xyz")
    atoms.write(path)
    return path


def measured_to(monkeypatch, measured_lmax: int) -> None:
    """The adaptive choice measured to ``measured_lmax`` on the structure and one rattled copy
    (the real choose_quadrature; at lmax = 0 the model's planted lambda = 2 breaking
    is unresolved and no candidate is credited with removing it, as with
    ``symmetrize --lmax 0``)."""
    real = torchsim_models.adaptive_quadrature

    def measured(model, atoms, lmax=3, n_rattled=4, seed=0):
        return real(model, atoms, lmax=measured_lmax, n_rattled=1, seed=seed)

    monkeypatch.setattr(torchsim_models, "adaptive_quadrature", measured)


def _run(cluster_file, out):
    return main(["md", MODEL, cluster_file, "--engine", "torchsim", "--variants", "symmetrized", "--quadrature",
                 "adaptive", "--replicas", "1", "--steps", "2", "--interval", "1", "--out", str(out), "-q"])


def test_adaptive_choice_without_tolerance_met_is_said(tmp_path, cluster_file, capfd, monkeypatch):
    """No candidate meets the tolerance: the run goes on with the largest candidate
    (exit 0: the MD itself ran) but says so on stderr, in the variant's description
    and in summary.json (it used the largest candidate without a word)."""
    measured_to(monkeypatch, 0)
    capfd.readouterr()
    assert _run(cluster_file, tmp_path / "out") == 0
    out, err = capfd.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("ase-symdiag md: warning:")]
    assert len(warnings) == 1 and "tolerance NOT met" in warnings[0], err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["warnings"]) == 1 and "no candidate quadrature met" in summary["warnings"][0]
    assert "tolerance NOT met" in summary["settings"]["variants"]["symmetrized"]


def test_adaptive_choice_with_tolerance_met_warns_nothing(tmp_path, cluster_file, capfd, monkeypatch):
    """Measured to lambda = 3 the planted lambda = 2 breaking is resolved and removed:
    a quadrature meets the tolerance, no warning is printed or stored."""
    measured_to(monkeypatch, 3)
    capfd.readouterr()
    assert _run(cluster_file, tmp_path / "out") == 0
    out, err = capfd.readouterr()
    assert "ase-symdiag md: warning" not in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["warnings"] == []
    description = summary["settings"]["variants"]["symmetrized"]
    assert description.endswith("adaptive)") and "NOT met" not in description


def test_md_adaptive_needs_the_torchsim_engine(tmp_path, cluster_file, capfd):
    assert main(["md", MODEL, cluster_file, "--quadrature", "adaptive", "--out", str(tmp_path / "out")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engine torchsim" in err[0]
