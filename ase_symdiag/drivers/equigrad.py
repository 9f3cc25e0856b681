"""Equigrad of a model (docs/methods.md §8): evaluate, then differentiate.

By autograd where the model has it (Orb's ``rotational_grad``), otherwise by central
finite differences of six rotated evaluations through any backend; the pure pieces
(rotations, differences, the report) are :mod:`ase_symdiag.metrics.equigrad`.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ase_symdiag.backends.dispatch import TorchSimEvaluator, as_evaluator
from ase_symdiag.errors import ModelEvaluationError, UsageError
from ase_symdiag.metrics.equigrad import STEP, StructureEquigrad, axis_rotations, central_difference, from_rotational_grad
from ase_symdiag.metrics.equivariance import as_structures


def structure_equigrad(model, structure, *, step: Optional[float] = None, method: str = "auto") -> StructureEquigrad:
    """e (docs/methods.md §8) of ``structure`` (a validated
    :class:`~ase_symdiag.structures.Structure`) for any model :func:`~ase_symdiag.backends.dispatch.as_evaluator` accepts (or an Evaluator).

    ``method``: "autograd" (Orb models), "finite-difference" (any model) or "auto"
    (autograd where available). ``step``: rad, default :data:`STEP` of the model's dtype.
    Raises :class:`~ase_symdiag.errors.UsageError` for an unknown method or autograd on a
    model without it, and ModelEvaluationError for non-finite energies.
    """
    if method not in ("auto", "autograd", "finite-difference"):
        raise UsageError(f"equigrad method must be 'auto', 'autograd' or 'finite-difference', got '{method}'")
    evaluator = as_evaluator(model)
    inner = evaluator.model if isinstance(evaluator, TorchSimEvaluator) else None
    has_autograd = inner is not None and hasattr(inner, "rotational_grad")
    if method == "autograd" and not has_autograd:
        raise UsageError(f"{evaluator.name}: no autograd equigrad for this model; use method='finite-difference'")
    label = structure.label or "structure"
    if has_autograd and method != "finite-difference":
        from ase_symdiag.backends.torchsim import rotated_state

        vector = from_rotational_grad(inner.rotational_grad(rotated_state(inner, structure, np.eye(3)[None]))[0].cpu().numpy())
        used, used_step = "autograd", None
    else:
        used_step = float(step if step is not None else STEP.get(evaluator.dtype, STEP["float32"]))
        if not used_step > 0:
            raise UsageError(f"equigrad step must be > 0 rad, got {used_step}")
        energies = evaluator.predictions(structure, axis_rotations(used_step), forces=False, stress=False).energy
        vector = central_difference(energies, used_step)
        used = "finite-difference"
    if not np.all(np.isfinite(vector)):
        raise ModelEvaluationError(f"model '{evaluator.name}' gave a non-finite equigrad for {label}")
    return StructureEquigrad(label, len(structure), vector.tolist(), float(np.linalg.norm(vector)), used, used_step)


def equigrad(model, structures, *, step: Optional[float] = None, method: str = "auto") -> List[StructureEquigrad]:
    """:func:`structure_equigrad` of every structure (ase.Atoms, a Structure, or a list)."""
    evaluator = as_evaluator(model)
    return [structure_equigrad(evaluator, item, step=step, method=method) for item in as_structures(structures)]


__all__ = ["equigrad", "structure_equigrad"]
