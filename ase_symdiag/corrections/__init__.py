"""Minimal-bias corrections: exact physical constraints at (almost) no cost.

Each correction is a small object with a ``name`` and

    ``correction(outputs, structure, masses=None) -> outputs``

acting on the numpy outputs of ONE structure: a dict with ``energy`` (float, eV),
``forces`` ((N, 3) eV/Å or None), ``stress`` ((3, 3) eV/Å^3 or None) and
``energies`` ((N,) eV or None); ``masses`` ((N,) amu) is only used where stated. A
correction returns a new dict with new arrays and never modifies its input.

Output post-processors (no extra model evaluation):

- :class:`NetForce`: zero net force (translational invariance), :mod:`.forces`.
- :class:`NetTorque`: zero net torque for finite (non-periodic) structures, :mod:`.forces`.
- :class:`SymmetricStress`: symmetric stress tensor, :mod:`.stress`.
- :class:`PointGroupAverage`: outputs exactly invariant under the crystal's space-group
  operations (rotations with their fractional translations), :mod:`.point_group`.

Corrections that change what the model is asked (the calculator does this part):

- :class:`StochasticRotation`: one Haar-random O(3) operation per call; declares
  ``rotations(structure) -> (rotations (K, 3, 3), weights (K,))``, :mod:`.stochastic`.
- :class:`MixedForces`: direct forces plus a conservative correction refreshed every
  n-th call; declares ``evaluation_options(options, structure) -> options``, :mod:`.mixed`.

:class:`~ase_symdiag.calculator.SymDiagCalculator` takes ``corrections=[...]`` (objects
or the names in :data:`NAMES`, see :func:`resolve_corrections`, :mod:`.registry`) and
applies them, in the given order, after evaluation and rotational averaging and before
the results are written (stress as 3x3, before Voigt). Conventions: ``x' = x R^T``;
forces are rows. Bad arguments raise :class:`~ase_symdiag.errors.UsageError`,
unsuitable structures :class:`~ase_symdiag.errors.StructureError`.
"""

from ase_symdiag.corrections.base import Correction, Outputs
from ase_symdiag.corrections.forces import NetForce, NetTorque, net_force, net_torque
from ase_symdiag.corrections.mixed import MixedForces
from ase_symdiag.corrections.point_group import PointGroupAverage, space_group_operations
from ase_symdiag.corrections.registry import (
    NAMES,
    apply_corrections,
    correct_prediction,
    prepare_evaluation,
    resolve_corrections,
)
from ase_symdiag.corrections.stochastic import StochasticRotation
from ase_symdiag.corrections.stress import SymmetricStress

__all__ = [
    "NAMES",
    "Correction",
    "MixedForces",
    "NetForce",
    "NetTorque",
    "Outputs",
    "PointGroupAverage",
    "StochasticRotation",
    "SymmetricStress",
    "apply_corrections",
    "correct_prediction",
    "net_force",
    "net_torque",
    "prepare_evaluation",
    "resolve_corrections",
    "space_group_operations",
]
