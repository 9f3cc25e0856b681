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
