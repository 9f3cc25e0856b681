"""The README's transcripts are what the commands print today (scripts/make_readme.py)."""

import importlib.util

import pytest

from repo import ROOT

from ase_symdiag.report import format_number, format_table


@pytest.fixture(scope="module")
def make_readme():
    spec = importlib.util.spec_from_file_location("make_readme", ROOT / "scripts" / "make_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_transcripts_are_current(make_readme, capsys):
    status = make_readme.main(["--check"])
    assert status == 0, capsys.readouterr().err


def _table(energy, forces, physical=0.025, met="yes"):
    """A transcript in the form `symmetrize` prints (a table, then a sentence)."""
    rows = [["C1", 1, 10.2, physical, met], ["Th", 24, energy, forces, met]]
    table = format_table(["quadrature", "operations", "energy meV/atom", "forces eV/A", "met"], rows)
    return f"{table}\nchosen: 'Th' leaves energy {format_number(energy)} meV/atom\nmeasured: 37.7 ms\n"


OLD = _table(2.43e-11, 7.39e-14)


@pytest.mark.parametrize(
    "new",
    [
        _table(2.46e-11, 7.65e-14),  # another machine's round-off digits
        _table(3.1e-12, 0.0),  # another exponent, an exact zero (a narrower column)
        _table(-2.4e-11, 7.39e-14),
        OLD.replace("37.7 ms", "52.0 ms"),  # a timing
    ],
)
def test_round_off_and_timings_match_any_other(make_readme, new):
    assert new != OLD
    assert make_readme.same_transcript(OLD, new)


@pytest.mark.parametrize(
    "new",
    [
        _table(2.43e-11, 7.39e-14, physical=0.026),  # a physical number
        _table(2.43e-11, 7.39e-14, physical=2.5e-4),  # a small physical number, in scientific notation
        _table(2.43e-5, 7.39e-14),  # round-off became a physical value
        _table(2.43e-11, 7.39e-14, met="NO"),  # a word
        OLD.replace("Th", "Oh"),
        OLD.replace("operations", "evaluations"),
    ],
)
def test_anything_else_must_match_exactly(make_readme, new):
    assert not make_readme.same_transcript(OLD, new)
