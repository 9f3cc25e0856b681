"""Symmetrized inference of a model (docs/methods.md §2): evaluate, then average.

Any form of model (:func:`~ase_symdiag.backends.dispatch.as_evaluator`) is evaluated
on the operations of a quadrature chunk by chunk; the chunks go to the pure
:func:`ase_symdiag.metrics.symmetrize.average_chunks`.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from ase_symdiag.backends.dispatch import MetatomicEvaluator, as_evaluator
from ase_symdiag.errors import UsageError
from ase_symdiag.metrics.symmetrize import SymmetrizedPrediction, average_chunks
from ase_symdiag.o3.quadrature import O3Quadrature
from ase_symdiag.structures import Structure


def symmetrized_prediction(
    model,
    structure: Structure,
    quadrature: O3Quadrature,
    *,
    forces: bool = True,
    stress: bool = True,
    energies: bool = False,
    direct: bool = False,
    batch_size: Optional[int] = 16,
    chunk_atoms: Optional[int] = None,
    keep_samples: bool = True,
    progress=None,
    inputs: Optional[Mapping] = None,
    uncertainty: bool = False,
) -> SymmetrizedPrediction:
    """Average any model (a metatomic model or handle, a TorchSim model, an ASE
    calculator) over ``quadrature``, chunk by chunk
    (:func:`ase_symdiag.metrics.symmetrize.average_chunks`). With
    ``keep_samples=False`` peak memory is that of one chunk
    (:func:`~ase_symdiag.backends.metatomic.evaluation.chunk_size` copies),
    independent of the number of operations; ``keep_samples=True`` also returns every
    back-rotated ``g(R_k)`` (spectra). ``inputs``/``uncertainty``: metatomic models only
    (:func:`~ase_symdiag.backends.metatomic.evaluation.evaluate`)."""
    evaluator = as_evaluator(model)
    extra = {}
    if inputs is not None or uncertainty:
        if not isinstance(evaluator, MetatomicEvaluator):
            raise UsageError("inputs= and uncertainty= are options of metatomic models")
        extra = dict(inputs=inputs, uncertainty=uncertainty)
    chunks = evaluator.chunks(
        structure, np.asarray(quadrature.rotations), forces=forces, stress=stress, energies=energies,
        direct=direct, batch_size=batch_size, chunk_atoms=chunk_atoms, progress=progress, **extra,
    )
    return average_chunks(chunks, quadrature, keep_samples=keep_samples)


__all__ = ["symmetrized_prediction"]
