"""One definition of each shared constant: a unit conversion or an output name is
spelled once in the package and imported everywhere else."""

import ast
import tokenize

import pytest

from repo import ROOT

PACKAGE = ROOT / "ase_symdiag"
#: eV/Å^3 per GPa (ase.units.GPa is its reciprocal)
EV_PER_A3_IN_GPA = 160.21766208


def _tokens(kind: int):
    """(path relative to the repository, token) of every token of ``kind`` in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        with path.open("rb") as handle:
            for token in tokenize.tokenize(handle.readline):
                if token.type == kind:
                    yield str(path.relative_to(ROOT)), token


def _string(token) -> object:
    try:
        return ast.literal_eval(token.string)
    except (ValueError, SyntaxError):
        return None


@pytest.mark.parametrize("name", ["non_conservative_force", "non_conservative_stress"])
def test_output_names_are_spelled_once(name):
    where = [path for path, token in _tokens(tokenize.STRING) if _string(token) == name]
    assert where == ["ase_symdiag/backends/metatomic/model.py"]


def test_gpa_conversion_is_written_once():
    def is_gpa(text: str) -> bool:
        try:
            value = float(text)
        except ValueError:  # complex or hexadecimal literals
            return False
        return value > 0 and min(abs(value / EV_PER_A3_IN_GPA - 1), abs(value * EV_PER_A3_IN_GPA - 1)) < 1e-6

    where = [path for path, token in _tokens(tokenize.NUMBER) if is_gpa(token.string)]
    assert where == ["ase_symdiag/o3/transforms.py"]
