"""The general backend: any ASE calculator, one call per rotated copy.

For calculators that are not a bare metatomic model (ASE's own, a symmetrized or
corrected :class:`~ase_symdiag.SymDiagCalculator`, a user's): each structure is
rotated with its cell, ``x' = x R^T``, ``cell' = cell R^T``, and evaluated through
the calculator's ordinary ASE interface, so what is measured is what the calculator
returns. The outputs come back as :class:`~ase_symdiag.backends.samples.Predictions`
(rotated frame), checked to be finite, and every metric is computed from them by
:mod:`ase_symdiag.metrics`, exactly as for the batched metatomic backend.

Units: energy eV, forces eV/Å, stress eV/Å^3 (3x3, fully periodic structures only).
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ase_symdiag.backends.samples import Predictions, check_finite


def rotated_atoms(atoms, rotation: np.ndarray):
    """A copy of ``atoms`` (no calculator) with positions and cell rotated, ``x' = x R^T``."""
    copy = atoms.copy()
    copy.calc = None
    copy.set_cell(np.asarray(atoms.cell.array) @ rotation.T, scale_atoms=False)
    copy.positions = np.asarray(atoms.positions) @ rotation.T
    return copy


def calculator_name(calculator) -> str:
    """How a report names ``calculator``: its ``description`` if it has one, else its type."""
    return str(getattr(calculator, "description", None) or type(calculator).__name__)


def calculator_predictions(calculator, atoms, operations: np.ndarray, *, label: str = "") -> Predictions:
    """Energy (K,), forces (K, N, 3) and, for fully periodic structures, stress
    (K, 3, 3) of ``atoms`` rotated by each of ``operations`` (K, 3, 3), through any ASE
    calculator, one call per operation. Outputs the calculator does not implement are
    ``None``. Raises :class:`~ase_symdiag.errors.ModelEvaluationError` naming ``label``
    if any returned value is NaN or infinite."""
    from ase.calculators.calculator import PropertyNotImplementedError

    periodic = bool(np.all(atoms.pbc))
    energy: List[float] = []
    forces: Optional[list] = []
    stress: Optional[list] = [] if periodic else None
    for rotation in operations:
        image = rotated_atoms(atoms, rotation)
        image.calc = calculator
        energy.append(float(image.get_potential_energy()))
        if forces is not None:
            try:
                forces.append(np.array(image.get_forces(), dtype=np.float64))
            except PropertyNotImplementedError:
                forces = None
        if stress is not None:
            try:
                stress.append(np.array(image.get_stress(voigt=False), dtype=np.float64))
            except PropertyNotImplementedError:
                stress = None
    predictions = Predictions(
        energy=np.array(energy, dtype=np.float64),
        forces=np.stack(forces) if forces else None,
        stress=np.stack(stress) if stress else None,
    )
    return check_finite(predictions, label=label or atoms.get_chemical_formula(), source=calculator_name(calculator))


def is_ase_calculator(model) -> bool:
    """Whether ``model`` is an ASE calculator (an ``ase`` ``BaseCalculator``)."""
    try:
        from ase.calculators.calculator import BaseCalculator
    except ImportError:  # pragma: no cover - ASE is a dependency
        return False
    return isinstance(model, BaseCalculator)


__all__ = ["calculator_name", "calculator_predictions", "is_ase_calculator", "rotated_atoms"]
