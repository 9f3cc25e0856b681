"""Stress constraint: a symmetric stress tensor."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ase_symdiag.corrections.base import Correction, Outputs, copy_outputs
from ase_symdiag.structures import Structure

__all__ = ["SymmetricStress"]


class SymmetricStress(Correction):
    """Symmetric stress: ``S <- (S + S^T) / 2`` (3x3, eV/Å^3).

    Makes exact: ``S = S^T`` (to round-off), i.e. zero internal torque density (the
    antisymmetric part of the stress of a rotation-invariant energy vanishes). Note
    that the calculator's Voigt output already averages each off-diagonal pair, so
    this changes the 3x3 tensor the other corrections and users of
    :func:`~ase_symdiag.corrections.apply_corrections` see, not ``results["stress"]``.
    Other outputs untouched.
    """

    name = "symmetric_stress"

    def __call__(self, outputs: Outputs, structure: Structure, masses: Optional[np.ndarray] = None) -> Outputs:
        out = copy_outputs(outputs)
        stress = out.get("stress")
        if stress is not None:
            out["stress"] = 0.5 * (stress + stress.T)
        return out
