"""Paths of the repository, for tests that read shipped models, examples and scripts."""

import pathlib

#: the repository root (the folder holding ``models/``, ``docs/``, ``lammps_examples/``)
ROOT = pathlib.Path(__file__).resolve().parent.parent
