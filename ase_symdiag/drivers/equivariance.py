"""The equivariance check of a model (docs/methods.md §1): evaluate, then measure.

Any form of model (:func:`~ase_symdiag.backends.dispatch.as_evaluator`) is evaluated
on the structures and their rotated copies; the samples go to the pure metric
:func:`ase_symdiag.metrics.equivariance.errors_report`.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ase_symdiag.backends.dispatch import ASEEvaluator, as_evaluator
from ase_symdiag.backends.samples import Predictions
from ase_symdiag.drivers.progress import progress_bar
from ase_symdiag.metrics.equivariance import EquivarianceReport, as_structures, check_operations, errors_report
from ase_symdiag.structures import Structure


def check_equivariance(
    model,
    structures,
    *,
    n_rotations: int = 8,
    seed: Optional[int] = 0,
    rotations: Optional[Sequence] = None,
    include_inversion: bool = True,
    direct: bool = True,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    batch_size: int = 16,
    progress: bool = False,
) -> EquivarianceReport:
    """:class:`~ase_symdiag.metrics.equivariance.EquivarianceReport` of any model
    (:func:`~ase_symdiag.backends.dispatch.as_evaluator`: a metatomic ``.pt`` path,
    ``AtomisticModel`` or ``ModelHandle``, a TorchSim ``ModelInterface``, an ASE
    calculator) on ``structures`` (Atoms or a list): ``n_rotations`` Haar-random
    operations from ``seed`` (every second improper unless ``include_inversion=False``), then
    any ``rotations`` given (validated). The unrotated structure is evaluated with its
    copies (index 0). ``direct``: also the model's direct forces/stress if it returns
    them. Definitions: docs/methods.md §1."""
    operations = check_operations(n_rotations, seed, rotations, include_inversion)
    report, _ = equivariance_with_predictions(
        as_evaluator(model, device=device, dtype=dtype), structures, operations, seed=seed, direct=direct,
        batch_size=batch_size, progress=progress,
    )
    return report


def equivariance_with_predictions(
    model,
    structures,
    operations: np.ndarray,
    *,
    seed: Optional[int] = None,
    direct: bool = True,
    batch_size: int = 16,
    progress: bool = False,
) -> Tuple[EquivarianceReport, List[Predictions]]:
    """``(EquivarianceReport, [Predictions per structure])`` of any model under
    ``operations`` (K, 3, 3); each Predictions holds K+1 evaluations, the unrotated
    structure first (what :func:`check_equivariance` reports; failure messages read
    the per-atom forces from them)."""
    evaluator = as_evaluator(model)
    given = [structures] if isinstance(structures, Structure) or hasattr(structures, "get_positions") else list(structures)
    items = as_structures(given)
    evaluators = [
        ASEEvaluator(evaluator.calculator, template=original)  # an ASE calculator sees the user's atoms
        if isinstance(evaluator, ASEEvaluator) and hasattr(original, "get_positions") else evaluator
        for original in given
    ]
    for item in items:
        evaluator.check(item)
    with_identity = np.concatenate([np.eye(3)[None], operations])
    bar = progress_bar(len(items) * len(with_identity), progress, desc="model evaluations", unit="eval")
    predictions: List[Predictions] = []
    try:
        for item, evaluator_of_item in zip(items, evaluators):
            predictions.append(evaluator_of_item.predictions(
                item, with_identity, forces=True, stress=True, direct=direct, batch_size=batch_size,
                progress=bar.update if bar is not None else None,
            ))
    finally:
        if bar is not None:
            bar.close()
    report = errors_report(evaluator.name, evaluator.dtype, evaluator.device, seed, operations, items, predictions)
    return report, predictions


def calculator_equivariance(
    calculator,
    labelled: Sequence[Tuple[str, object]],
    operations: np.ndarray,
    *,
    seed: Optional[int] = None,
    dtype: str = "float64",
    device: str = "cpu",
) -> Tuple[EquivarianceReport, List[Predictions]]:
    """:class:`~ase_symdiag.metrics.equivariance.EquivarianceReport` of any ASE
    calculator on ``[(label, Atoms), ...]`` under ``operations`` (K, 3, 3).

    The slow, general path (one ASE call per operation). Returns the report and the
    predictions of each structure (K+1 evaluations, the unrotated structure first).
    """
    from ase_symdiag.backends.ase import calculator_name, calculator_predictions
    from ase_symdiag.structures import from_atoms

    with_identity = np.concatenate([np.eye(3)[None], operations])
    structures, predictions = [], []
    for label, atoms in labelled:
        structures.append(from_atoms(atoms, label=label))
        predictions.append(calculator_predictions(calculator, atoms, with_identity, label=label))
    report = errors_report(calculator_name(calculator), dtype, device, seed, operations, structures, predictions)
    return report, predictions


__all__ = ["calculator_equivariance", "check_equivariance", "equivariance_with_predictions"]
