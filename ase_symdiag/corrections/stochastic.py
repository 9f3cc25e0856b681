"""Stochastic symmetrization: one Haar-random O(3) operation per calculation."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ase_symdiag.corrections.base import Correction, Outputs, copy_outputs
from ase_symdiag.o3.operations import random_operation
from ase_symdiag.structures import Structure

__all__ = ["StochasticRotation"]


class StochasticRotation(Correction):
    """One fresh Haar-random O(3) operation ``R`` per calculation (1 evaluation).

    The calculator evaluates the model on ``x R^T`` and back-rotates (``E(Rx)``,
    ``F(Rx) R``, ``R^T S(Rx) R``). Since ``R`` is Haar-distributed, the expectation of
    every output is the exact Haar average (the fully symmetrized prediction): the
    estimator is unbiased for every breaking degree. Each call has an error
    ``g(R) - <g>`` of zero mean and root-mean-square equal to the rotational standard
    deviation (``results["forces_std"]`` of a symmetrized calculator); consecutive
    calls are independent, so in MD it acts as an uncorrelated random force (no
    systematic drift of the angular momentum, but a random walk of it and of the total
    energy, since each step's forces are the gradient of a different energy).
    ``include_inversion=False`` samples SO(3) only (keeps chirality-odd breaking).

    With ``symmetrize=`` the whole quadrature is rotated by the same random ``R``
    (operations ``Q_k R``): still unbiased, with the quadrature's lower variance.
    ASE caches results per geometry: a new ``R`` is drawn at each new calculation
    (by :func:`ase_symdiag.o3.operations.random_operation`). Stateful (its random
    generator advances); ``__call__`` is a pass-through.
    """

    name = "stochastic"

    def __init__(self, seed: Optional[int] = None, include_inversion: bool = True) -> None:
        self.seed = seed
        self.include_inversion = bool(include_inversion)
        self._rng = np.random.default_rng(seed)

    def rotations(self, structure: Structure) -> Tuple[np.ndarray, np.ndarray]:
        """``((1, 3, 3), (1,))``: a Haar-random O(3) (or SO(3)) operation, weight 1."""
        return random_operation(self._rng, self.include_inversion)[None], np.ones(1)

    def __call__(self, outputs: Outputs, structure: Structure, masses: Optional[np.ndarray] = None) -> Outputs:
        return copy_outputs(outputs)

    def __repr__(self) -> str:
        return f"StochasticRotation(seed={self.seed!r}, include_inversion={self.include_inversion})"
