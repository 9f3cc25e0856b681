"""report.atomic_write: through symbolic links, and no temporary file left behind (issue 15)."""

import json
import os

import pytest

from ase_symdiag.report import atomic_write, write_json


def test_json_onto_a_symlink_writes_the_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    os.symlink(target, link)
    write_json(str(link), {"a": 1})
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text()) == {"a": 1}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_no_temporary_file(tmp_path, error):
    path = tmp_path / "out.json"
    path.write_text("old")

    def writer(tmp):
        with open(tmp, "w") as handle:
            handle.write("partial")
        raise error

    with pytest.raises(error):
        atomic_write(str(path), writer)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_cli_json_onto_a_symlink(equivariant_model, tmp_path):
    import ase.io
    from ase.build import bulk

    from ase_symdiag.cli.app import main

    ase.io.write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True))
    target = tmp_path / "report.json"
    target.write_text("{}")
    os.symlink(target, tmp_path / "link.json")
    assert main(["spectrum", equivariant_model, str(tmp_path / "cu.extxyz"), "--lmax", "1", "-q",
                 "--json", str(tmp_path / "link.json")]) == 0
    assert (tmp_path / "link.json").is_symlink()
    assert "spectra" in json.loads(target.read_text())


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_replacing_a_file_keeps_its_mode(tmp_path, mode):
    """Every output became 0644: a private 0600 report turned world-readable."""
    path = tmp_path / "private.json"
    path.write_text("{}")
    os.chmod(path, mode)
    write_json(str(path), {"a": 1})
    assert stat_mode(path) == mode and json.loads(path.read_text()) == {"a": 1}


@pytest.mark.parametrize("mask", [0o077, 0o027, 0o002])
def test_a_new_file_honours_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "new.json"
    write_json(str(path), {"a": 1})
    assert stat_mode(path) == 0o666 & ~mask


def test_a_symlink_target_keeps_its_mode(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    os.symlink(target, tmp_path / "link.json")
    write_json(str(tmp_path / "link.json"), {"a": 1})
    assert stat_mode(target) == 0o600


def test_atomic_save_writes_what_save_wrote(tmp_path):
    from ase_symdiag.report import atomic_save

    path = tmp_path / "blob.bin"
    def save(name):
        with open(name, "wb") as handle:
            handle.write(b"\x00payload")

    atomic_save(str(path), save)
    assert path.read_bytes() == b"\x00payload"


def stat_mode(path) -> int:
    import stat

    return stat.S_IMODE(os.stat(path).st_mode)
