"""Training checkpoints of the reference PET: atomic saves, loading, rebuilding the model.

A checkpoint is a dict saved with :func:`torch.save`, written after every epoch by
:func:`ase_symdiag.reference.training.train`: ``epoch``, ``config``, ``hypers``,
``atomic_types``, ``dtype``, ``model_state``, ``best_state``, ``best_val``,
``optimizer_state``, ``scheduler_state``, ``numpy_rng_state``, ``torch_rng_state``,
``history`` (one dict per epoch) and ``elapsed_s``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Union

import torch

from ase_symdiag.errors import SymDiagError


class CheckpointError(SymDiagError):
    """A checkpoint is missing, unreadable or does not match the configuration."""


#: what every checkpoint written by :func:`ase_symdiag.reference.training.train` holds
REQUIRED_KEYS = ("epoch",)
#: what rebuilding its model needs
MODEL_KEYS = ("hypers", "atomic_types", "dtype", "model_state")


def save_checkpoint(checkpoint: Dict[str, Any], path: str) -> None:
    """Write ``checkpoint`` to ``path`` atomically (an interrupted save leaves the old file)."""
    from ase_symdiag.report import atomic_save

    atomic_save(path, lambda name: torch.save(checkpoint, name))


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint (on the CPU); raises :class:`CheckpointError`."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint '{path}' is a directory")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        first = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(f"could not read checkpoint '{path}': {first}") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        what = "a dict without " + ", ".join(missing) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"'{path}' is not a training checkpoint of 'ase-symdiag train' (got {what})"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: Union[dict, str], which: str = "best") -> torch.nn.Module:
    """Rebuild the PET of a checkpoint (dict or path), in eval mode and the
    checkpoint's dtype; ``which`` = best | last."""
    from ase_symdiag.reference.config import torch_dtype
    from ase_symdiag.reference.pet import build_pet

    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint(checkpoint)
    if which not in ("best", "last"):
        raise CheckpointError(f"which must be 'best' or 'last', got {which!r}")
    missing = [key for key in MODEL_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"the checkpoint holds no model (it lacks {', '.join(missing)})")
    model = build_pet(checkpoint["atomic_types"], checkpoint["hypers"])
    model = model.to(torch_dtype(checkpoint["dtype"]))
    state = checkpoint["best_state"] if which == "best" and checkpoint.get("best_state") else checkpoint["model_state"]
    model.load_state_dict(state)
    return model.eval()
