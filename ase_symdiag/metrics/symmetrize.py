"""Symmetrized inference: averaging back-rotated predictions over an O(3) quadrature.

For a structure x, an output y with representation rho and a quadrature
{(R_k, w_k)}, the back-rotated prediction ``g(R) = rho(R)^-1 y(Rx)`` (energy: E(Rx);
forces: F(Rx) R; stress: R^T S(Rx) R) is averaged, ``<g> = sum_k w_k g(R_k)``, and its
spread ``std = sqrt(sum_k w_k |g(R_k) - <g>|^2)`` is the rotational uncertainty. A
quadrature exact to degree L removes every symmetry-breaking component with
1 <= lambda <= L from the average (METHODS.md sections 2-3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from ase_symdiag.errors import UsageError

from ase_symdiag.backends.metatomic.evaluation import Predictions, evaluate
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.o3.quadrature import O3Quadrature
from ase_symdiag.structures import Structure
from ase_symdiag.o3.transforms import back_rotate_tensors, back_rotate_vectors


def back_rotated(predictions: Predictions, rotations: np.ndarray) -> Dict[str, np.ndarray]:
    """``g(R_k)`` for every output present: ``{name: (K, ...)}`` in the original frame."""
    out = {"energy": predictions.energy}
    if predictions.energies is not None:
        out["energies"] = predictions.energies
    if predictions.forces is not None:
        out["forces"] = back_rotate_vectors(predictions.forces, rotations)
    if predictions.stress is not None:
        out["stress"] = back_rotate_tensors(predictions.stress, rotations)
    if predictions.direct_forces is not None:
        out["direct_forces"] = back_rotate_vectors(predictions.direct_forces, rotations)
    if predictions.direct_stress is not None:
        out["direct_stress"] = back_rotate_tensors(predictions.direct_stress, rotations)
    if getattr(predictions, "energy_uncertainty", None) is not None:
        out["energy_uncertainty"] = predictions.energy_uncertainty
    return out


def weighted_mean_std(values: np.ndarray, weights: np.ndarray):
    """Mean and std over the first axis with weights summing to 1.

    Lebedev orders 13, 25 and 27 have negative weights, so the weighted variance can
    come out slightly negative: it is clamped at zero.
    """
    w = weights.reshape((-1,) + (1,) * (values.ndim - 1))
    mean = np.sum(w * values, axis=0)
    variance = np.sum(w * (values - mean) ** 2, axis=0)
    return mean, np.sqrt(np.clip(variance, 0.0, None))


@dataclass
class SymmetrizedPrediction:
    """Quadrature averages (``mean``) and rotational spreads (``std``) of each output.

    Keys: ``energy`` (eV), ``energies`` (N,), ``forces`` (N, 3) eV/Å, ``stress``
    (3, 3) eV/Å^3, and ``direct_forces``/``direct_stress`` when requested.
    ``samples`` keeps the back-rotated values ``g(R_k)``, (K, ...), for spectra.
    """

    mean: Dict[str, np.ndarray]
    std: Dict[str, np.ndarray]
    quadrature: O3Quadrature
    samples: Dict[str, np.ndarray]


def symmetrized_prediction(
    handle: ModelHandle,
    structure: Structure,
    quadrature: O3Quadrature,
    *,
    forces: bool = True,
    stress: bool = True,
    energies: bool = False,
    direct: bool = False,
    batch_size: int = 16,
    progress=None,
    inputs=None,
    uncertainty: bool = False,
) -> SymmetrizedPrediction:
    """Evaluate all operations of ``quadrature`` in batches and average them.

    ``inputs``/``uncertainty``: see :func:`~ase_symdiag.backends.metatomic.evaluation.evaluate`.
    """
    predictions = evaluate(
        handle,
        structure,
        quadrature.rotations,
        forces=forces,
        stress=stress,
        energies=energies,
        direct=direct,
        batch_size=batch_size,
        progress=progress,
        inputs=inputs,
        uncertainty=uncertainty,
    )
    samples = back_rotated(predictions, quadrature.rotations)
    mean, std = {}, {}
    for name, values in samples.items():
        mean[name], std[name] = weighted_mean_std(values, quadrature.weights)
    return SymmetrizedPrediction(mean=mean, std=std, quadrature=quadrature, samples=samples)


def resolve_quadrature(spec) -> Optional[O3Quadrature]:
    """Turn a user's ``symmetrize=`` value into a quadrature.

    ``None``/``False``: no averaging. An int L: the smallest quadrature exact to degree
    L (with inversion). A string: a printed quadrature name, see
    :func:`ase_symdiag.o3.quadrature.quadrature_from_name` (``"Oh"``, ``"O"``,
    ``"O:proper"``, ``"lebedev:3"``, ``"grid:3"``, ``"3"``). An :class:`O3Quadrature`
    is used as is.
    """
    from ase_symdiag.o3 import quadrature as q

    if spec is None or spec is False:
        return None
    if isinstance(spec, O3Quadrature):
        return spec
    if isinstance(spec, bool):
        raise UsageError("symmetrize=True is ambiguous: give a degree, e.g. symmetrize=3")
    if isinstance(spec, (int, np.integer)):
        if spec < 0:
            raise UsageError(f"symmetrize={int(spec)}: the degree must be >= 0")
        return q.quadrature_from_name(str(int(spec)))
    if isinstance(spec, str):
        return q.quadrature_from_name(spec)
    raise UsageError(f"symmetrize={spec!r}: give a degree, a quadrature name (e.g. 'Oh', 'lebedev:3') or an O3Quadrature")
