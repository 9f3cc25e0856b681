"""Metrics computed once from rotated-frame samples, whatever backend produced them.

Pure functions of samples: no module here imports a backend or a model library; the
drivers that evaluate a model and then measure it are :mod:`ase_symdiag.drivers`.

- :mod:`~ase_symdiag.metrics.equivariance`: output equivariance errors (docs/methods.md §1);
- :mod:`~ase_symdiag.metrics.symmetrize`: quadrature averages and rotational spreads (§2);
- :mod:`~ase_symdiag.metrics.spectrum`: the (lambda, parity) spectrum of the breaking (§3);
- :mod:`~ase_symdiag.metrics.adaptive`: the cheapest quadrature that meets a tolerance (§4);
- :mod:`~ase_symdiag.metrics.representations`: symmetry content of learned layers (§5).
"""
