"""scripts/evaluate_models.py: pairing of models in their cards (no model is its own partner)."""

import importlib.util

import pytest

from repo import ROOT


@pytest.fixture(scope="module")
def evaluate_models():
    spec = importlib.util.spec_from_file_location("evaluate_models", ROOT / "scripts" / "evaluate_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_automatic_partners(evaluate_models):
    assert evaluate_models.automatic_partner("cu-emt-augmented") == "cu-emt-plain"
    assert evaluate_models.automatic_partner("ethanol-xtb-plain") == "ethanol-xtb-augmented"
    assert evaluate_models.automatic_partner("ethanol-xtb-equigrad") is None
    assert evaluate_models.MODELS == str(ROOT / "models")


def test_a_model_is_not_its_own_partner(evaluate_models, capsys):
    before = (ROOT / "models" / "ethanol-xtb-equigrad.md").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        evaluate_models.main(["ethanol-xtb-equigrad", "--partner", "ethanol-xtb-equigrad"])
    assert exit_.value.code == 2
    assert "own partner" in capsys.readouterr().err
    assert (ROOT / "models" / "ethanol-xtb-equigrad.md").read_bytes() == before
    with pytest.raises(evaluate_models.SymDiagError, match="own partner"):
        evaluate_models.card({"name": "x"}, {"name": "x"})


def test_partner_read_from_its_report(evaluate_models):
    partner = evaluate_models._partner("ethanol-xtb-equigrad", "ethanol-xtb-plain", {})
    assert partner["name"] == "ethanol-xtb-plain" and "force_relative" in partner["equivariance"]
    with pytest.raises(evaluate_models.SymDiagError, match="does not exist"):
        evaluate_models._partner("ethanol-xtb-equigrad", "no-such-model", {})
