"""The :class:`Correction` base class, the ``Outputs`` type and weighting helpers.

A correction acts on the numpy outputs of ONE structure: a dict with ``energy``
(float, eV), ``forces`` ((N, 3) eV/Å or None), ``stress`` ((3, 3) eV/Å^3 or None)
and ``energies`` ((N,) eV or None). It returns a new dict with new arrays and never
modifies its input.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ase_symdiag.errors import UsageError
from ase_symdiag.structures import Structure

__all__ = ["Correction", "Outputs"]

#: one structure's outputs: ``energy``, ``forces``, ``stress``, ``energies`` (see above)
Outputs = Dict[str, object]


class Correction:
    """Base class: ``name`` and a pure ``__call__(outputs, structure, masses=None)``."""

    name = "correction"

    def __call__(self, outputs: Outputs, structure: Structure, masses: Optional[np.ndarray] = None) -> Outputs:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def copy_outputs(outputs: Outputs) -> Outputs:
    """A shallow dict copy whose arrays are fresh copies (corrections stay pure)."""
    return {k: (np.array(v, dtype=np.float64, copy=True) if isinstance(v, np.ndarray) else v) for k, v in outputs.items()}


def atom_weights(kind: str, masses: Optional[np.ndarray], n: int, name: str) -> np.ndarray:
    """Per-atom weights ``(n,)``: ones for ``"uniform"``, the masses (amu) for ``"mass"``.

    Raises :class:`UsageError` when ``"mass"`` is asked without ``n`` positive masses.
    """
    if kind == "uniform":
        return np.ones(n)
    if masses is None:
        raise UsageError(f"{name}(weighting='mass') needs the atomic masses")
    masses = np.asarray(masses, dtype=np.float64)
    if masses.shape != (n,) or not np.all(masses > 0):
        raise UsageError(f"{name}: masses must be {n} positive numbers, got shape {masses.shape}")
    return masses


def check_weighting(weighting: str, name: str) -> str:
    """Return ``weighting`` if it is ``"uniform"`` or ``"mass"``, else raise :class:`UsageError`."""
    if weighting not in ("uniform", "mass"):
        raise UsageError(f"{name}: weighting must be 'uniform' or 'mass', got {weighting!r}")
    return weighting
