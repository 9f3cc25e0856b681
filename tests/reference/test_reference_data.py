"""The reference data generators are deterministic and round-trip through extxyz."""

import numpy as np
import pytest

from ase_symdiag.reference.data import (
    DataError,
    cu_emt_dataset,
    ethanol_xtb_dataset,
    read_dataset,
    write_dataset,
)


def _same(a, b, tol=0.0):
    return (
        np.array_equal(a.numbers, b.numbers)
        and np.allclose(a.positions, b.positions, atol=tol, rtol=0)
        and np.allclose(a.cell.array, b.cell.array, atol=tol, rtol=0)
        and abs(a.info["energy"] - b.info["energy"]) <= tol * 10
        and np.allclose(a.arrays["forces"], b.arrays["forces"], atol=tol * 10, rtol=0)
    )


def test_cu_emt_is_deterministic_and_labelled():
    first = cu_emt_dataset(2, seed=11, snapshots_per_run=2)
    again = cu_emt_dataset(2, seed=11, snapshots_per_run=2)
    other = cu_emt_dataset(2, seed=12, snapshots_per_run=2)
    assert len(first) == 2
    assert _same(first[0], again[0]) and _same(first[1], again[1])
    assert not _same(first[0], other[0])
    atoms = first[0]
    assert atoms.pbc.all() and len(atoms) in (31, 32)
    assert atoms.info["stress"].shape == (3, 3)
    assert np.allclose(atoms.info["stress"], atoms.info["stress"].T)
    # the cell is strained away from the cubic 7.22 Å box
    assert not np.allclose(atoms.cell.array, 7.22 * np.eye(3))


def test_ethanol_xtb_is_deterministic():
    pytest.importorskip("tblite")
    kwargs = dict(snapshots_per_run=1, equilibrate_steps=10, spacing=5)
    first = ethanol_xtb_dataset(1, seed=3, **kwargs)
    again = ethanol_xtb_dataset(1, seed=3, **kwargs)
    # the generator runs tblite on one OpenMP thread: reproducible (allow round-off
    # in case the OpenMP runtime could not be reached)
    assert _same(first[0], again[0], tol=1e-9)
    assert not first[0].pbc.any()
    assert first[0].get_chemical_formula() == "C2H6O"
    assert "stress" not in first[0].info


def test_write_read_round_trip(tmp_path):
    images = cu_emt_dataset(2, seed=0, snapshots_per_run=2)
    path = str(tmp_path / "cu.extxyz")
    write_dataset(images, path)
    back = read_dataset(path)
    assert len(back) == 2
    for a, b in zip(images, back):
        assert b.calc is None
        assert abs(a.info["energy"] - b.info["energy"]) < 1e-12
        np.testing.assert_allclose(a.arrays["forces"], b.arrays["forces"], atol=1e-7)
        np.testing.assert_allclose(a.info["stress"], b.info["stress"], atol=1e-12)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)


def test_missing_file_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(str(tmp_path / "nope.extxyz"))
