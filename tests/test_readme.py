"""The README's transcripts are what the commands print today (scripts/make_readme.py)."""

import importlib.util

from repo import ROOT


def test_readme_transcripts_are_current(capsys):
    spec = importlib.util.spec_from_file_location("make_readme", ROOT / "scripts" / "make_readme.py")
    make_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_readme)
    status = make_readme.main(["--check"])
    assert status == 0, capsys.readouterr().err
