"""Symmetry content of a model's learned layers (docs/methods.md §5): evaluate, then project.

The features of every requested layer are evaluated on a quadrature and accumulated
by the pure :class:`ase_symdiag.metrics.representations.LayerAccumulator`.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ase_symdiag.backends.metatomic.evaluation import evaluate
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.errors import ModelError, UsageError
from ase_symdiag.metrics.representations import (
    LayerAccumulator,
    RepresentationReport,
    feature_outputs,
    skipped_outputs,
)
from ase_symdiag.o3.quadrature import O3Quadrature, smallest_exact_quadrature
from ase_symdiag.structures import Structure


def representation_content(
    model,
    structures: Sequence[Structure],
    *,
    layers: Optional[Sequence[str]] = None,
    lmax: int = 3,
    quadrature: Optional[O3Quadrature] = None,
    batch_size: int = 16,
    progress=None,
) -> RepresentationReport:
    """Character-project every requested feature output of ``model`` on ``structures``.

    ``model``: a :class:`ModelHandle`, a metatomic ``.pt`` or a metatrain checkpoint
    (``.ckpt``, every layer of a PET; :mod:`ase_symdiag.backends.metatomic.metatrain`)."""
    from ase_symdiag.backends.metatomic.metatrain import checkpoint_handle, checkpoint_note, is_checkpoint

    if isinstance(model, ModelHandle):
        handle = model
    else:
        handle = checkpoint_handle(model) if is_checkpoint(model) else ModelHandle.load(model)
    available = feature_outputs(handle)
    skipped = skipped_outputs(handle)
    if layers is None or len(layers) == 0:
        layers = available
    else:
        resolved = []
        for layer in layers:
            matches = [n for n in available if n == layer or n.endswith(layer)]
            if not matches:
                why = "".join(f" ({n}: {w})" for n, w in skipped.items() if n == layer or n.endswith(layer))
                note = checkpoint_note(handle)
                hint = f" ({note[len('note: '):]})" if note else ""
                raise ModelError(f"{handle.source}: no feature output '{layer}'{why}; available: {available}{hint}")
            resolved += [m for m in matches if m not in resolved]
        layers = resolved
    if not layers:
        also = f" (skipped: {', '.join(skipped)})" if skipped else ""
        raise ModelError(
            f"{handle.source}: the model exposes no per-atom feature outputs (learned features are "
            f"'feature' or 'mtt::features::*' with per-atom samples){also}"
        )
    if quadrature is None:
        quadrature = smallest_exact_quadrature(2 * lmax)
    elif quadrature.degree < 2 * lmax:
        raise UsageError(f"quadrature '{quadrature.name}' is exact to degree {quadrature.degree}, lmax={lmax} needs {2 * lmax}")

    accumulator = LayerAccumulator(quadrature, lmax)
    for structure in structures:
        prediction = evaluate(
            handle, structure, quadrature.rotations, forces=False, stress=False,
            features=layers, batch_size=batch_size, progress=progress,
        )
        for name in layers:
            accumulator.add(name, prediction.features[name])
    return RepresentationReport(handle.source, lmax, quadrature.name, len(structures), accumulator.contents(), skipped)


__all__ = ["representation_content"]
