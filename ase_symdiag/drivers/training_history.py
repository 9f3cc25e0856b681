"""Symmetry through training (docs/methods.md §5, §1): every checkpoint of a metatrain
run evaluated, then measured (the records are :mod:`ase_symdiag.metrics.training_history`)."""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from ase_symdiag.backends.metatomic.metatrain import checkpoint_handle, training_checkpoints
from ase_symdiag.drivers.equivariance import check_equivariance
from ase_symdiag.drivers.representations import representation_content
from ase_symdiag.metrics.training_history import OUTPUT_COLUMNS, EpochBreaking, TrainingHistory
from ase_symdiag.structures import Structure


def metatrain_history(
    directory: str,
    structures: Sequence[Structure],
    *,
    run: Optional[str] = None,
    lmax: int = 2,
    n_rotations: int = 8,
    seed: int = 0,
    batch_size: int = 16,
    device: Optional[str] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> TrainingHistory:
    """Layer content and output breaking of every ``model_<epoch>.ckpt`` under ``directory``.

    ``lmax``: largest angular channel resolved for the layers (quadrature exact to
    ``2 lmax``); ``n_rotations``/``seed``: operations of the output check. ``progress``
    is called with each checkpoint's path before it is measured.
    """
    run = run or os.path.basename(os.path.abspath(directory))
    history = TrainingHistory(run=run, lmax=lmax, n_rotations=n_rotations, n_structures=len(structures))
    for epoch, path in training_checkpoints(directory):
        if progress is not None:
            progress(path)
        handle = checkpoint_handle(path, weights="epoch", device=device)
        report = representation_content(handle, structures, lmax=lmax, batch_size=batch_size)
        for layer in report.layers:
            history.layers.setdefault(layer.layer, []).append((epoch, layer.invariant_fraction))
        summary = check_equivariance(handle, structures, n_rotations=n_rotations, seed=seed, batch_size=batch_size).summary()
        history.outputs.append(EpochBreaking(epoch, path, *(summary[key] for key, _ in OUTPUT_COLUMNS)))
    return history


__all__ = ["metatrain_history"]
