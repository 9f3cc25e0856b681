"""Fixtures of the reference-model tests."""

import pytest


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from ase_symdiag.reference.data import cu_emt_dataset, write_dataset

    path = tmp_path_factory.mktemp("data") / "cu8.extxyz"
    write_dataset(cu_emt_dataset(8, seed=5, snapshots_per_run=4), str(path))
    return path
