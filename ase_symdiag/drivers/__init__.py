"""Drivers: evaluate a model on structures, then compute metrics of the samples.

One layer above ``backends/`` (which evaluate) and ``metrics/`` (which measure, and
never import a backend); the command line and the library's entry points call them.

- :mod:`~ase_symdiag.drivers.equivariance`: the equivariance check (docs/methods.md §1);
- :mod:`~ase_symdiag.drivers.symmetrize`: symmetrized prediction and spread (§2);
- :mod:`~ase_symdiag.drivers.spectrum`: the spectrum of the breaking (§3);
- :mod:`~ase_symdiag.drivers.representations`: symmetry content of learned layers (§5);
- :mod:`~ase_symdiag.drivers.training_history`: both through a metatrain run (§5, §1);
- :mod:`~ase_symdiag.drivers.equigrad`: dE/dtheta under an infinitesimal rotation (§8);
- :mod:`~ase_symdiag.drivers.uncertainty`: the rotational spread as an uncertainty (§9).
"""
