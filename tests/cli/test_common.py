"""cli/common.py: output paths checked before any work (issue 20)."""

import os

import pytest

from ase_symdiag.cli.common import check_outputs, same_file, unwritable
from ase_symdiag.errors import UsageError


@pytest.fixture
def files(tmp_path):
    (tmp_path / "structures.extxyz").write_text("x")
    (tmp_path / "model.pt").write_text("m")
    return tmp_path


def test_outputs_that_are_the_same_file_are_refused(files):
    with pytest.raises(UsageError, match="--json '.*x' is the same file as --export '.*x'"):
        check_outputs({"--export": str(files / "x"), "--json": str(files / "sub" / ".." / "x")}, {})


def test_an_output_onto_an_input_is_refused_through_links(files):
    os.symlink(files / "structures.extxyz", files / "link.json")
    os.link(files / "model.pt", files / "hard.json")
    for output, what in (("structures.extxyz", "structures"), ("link.json", "structures"), ("hard.json", "model")):
        with pytest.raises(UsageError, match=f"would overwrite the {what}"):
            check_outputs({"--json": str(files / output)},
                          {"model": str(files / "model.pt"), "structures": str(files / "structures.extxyz")})


def test_distinct_outputs_and_absent_ones_pass(files):
    check_outputs({"--json": str(files / "a.json"), "--plot": str(files / "a.png"), "--export": None},
                  {"model": str(files / "model.pt"), "--compare model": None})
    assert not same_file(str(files / "a.json"), str(files / "b.json"))


def test_names_too_long_are_found_before_writing(tmp_path):
    assert "file name too long" in unwritable(str(tmp_path / ("n" * 300)))
    assert "ending too long" in unwritable(str(tmp_path / f"a.{'e' * 250}"))
    assert "file name too long" in unwritable(str(tmp_path / ("d" * 300)), directory=True)
    assert unwritable(str(tmp_path / ("n" * 200))) is None


def test_missing_folders(tmp_path):
    assert "does not exist" in unwritable(str(tmp_path / "missing" / "out.json"))
    assert unwritable(str(tmp_path / "missing" / "deeper" / "out.pt"), create_folders=True) is None
    assert "does not exist" in unwritable(str(tmp_path / "missing" / "out"), directory=True)
    assert unwritable(str(tmp_path / "new"), directory=True) is None


def test_an_unwritable_folder_is_found_before_writing(tmp_path, monkeypatch):
    """Asked of the system (os.access), so that it holds for root on a read-only mount
    as for a user without permission (simulated here: the tests may run as root)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    assert unwritable(str(tmp_path / "out.json")) == f"folder '{tmp_path}' is not writable"
    assert unwritable(str(tmp_path / "a" / "b.pt"), create_folders=True) == f"folder '{tmp_path}' is not writable"


def test_a_read_only_folder_is_refused_at_parsing(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    from ase_symdiag.cli.app import main

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as info:
            main(["reference-model", str(folder / "m.pt")])
    finally:
        folder.chmod(0o700)
    assert info.value.code == 2 and "is not writable" in capsys.readouterr().err
