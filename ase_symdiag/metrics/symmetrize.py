"""Symmetrized inference: averaging back-rotated predictions over an O(3) quadrature.

For a structure x, an output y with representation rho and a quadrature
{(R_k, w_k)}, the back-rotated prediction ``g(R) = rho(R)^-1 y(Rx)`` (energy: E(Rx);
forces: F(Rx) R; stress: R^T S(Rx) R) is averaged, ``<g> = sum_k w_k g(R_k)``, and its
spread ``std = sqrt(sum_k w_k |g(R_k) - <g>|^2)`` is the rotational uncertainty. A
quadrature exact to degree L removes every symmetry-breaking component with
1 <= lambda <= L from the average (docs/methods.md §2 and §4).

The stress spread. ``std["stress"]`` is per entry of the 3x3 tensor, like
metatomic-ase's ``stress_rot_std``. What a calculator reports
(``SymDiagCalculator.results["stress_std"]``) is ``std["stress:voigt"]``: the spread
of the six Voigt components themselves (xx, yy, zz, yz, xz, xy; the off-diagonal
ones are ``(s_ij + s_ji) / 2``), i.e. the spread of the stress ASE returns. The
diagonal entries always agree one-to-one, and for a symmetric stress so do the
off-diagonal ones (tested against metatomic-ase). For an asymmetric virial they
differ: PET's direct stress, and the autograd virial of any energy that is not
rotation invariant (the antisymmetric part of the virial is the energy's derivative
with respect to an infinitesimal rotation). An antisymmetric part that varies with
the orientation is in metatomic-ase's ``[1, 2]`` and ``[2, 1]`` spreads but cancels
in the Voigt ``yz`` one, which is never larger than their mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

import numpy as np

from ase_symdiag.backends.samples import Predictions
from ase_symdiag.o3.quadrature import O3Quadrature
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


@dataclass
class SymmetrizedPrediction:
    """Quadrature averages (``mean``) and rotational spreads (``std``) of each output.

    Keys: ``energy`` (eV), ``energies`` (N,), ``forces`` (N, 3) eV/Å, ``stress``
    (3, 3) eV/Å^3, and ``direct_forces``/``direct_stress`` when requested; ``std``
    also has ``stress:voigt`` (and ``direct_stress:voigt``), the spread of the six
    Voigt components (what calculators report; module docstring for how it differs
    from the per-entry ``std["stress"]`` of an asymmetric stress). ``samples`` keeps the back-rotated values ``g(R_k)``,
    (K, ...), for spectra; it is empty when computed with ``keep_samples=False``.
    """

    mean: Dict[str, np.ndarray]
    std: Dict[str, np.ndarray]
    quadrature: O3Quadrature
    samples: Dict[str, np.ndarray]


class _RunningMoments:
    """Weighted mean and spread accumulated chunk by chunk.

    Sums are taken about the first sample ``g_0`` (``S1 = sum w (g - g_0)``,
    ``S2 = sum w (g - g_0)^2``), so ``mean = g_0 + S1`` and ``var = S2 - S1^2`` lose
    only the precision of the spread, not of the magnitude (weights sum to 1).
    """

    def __init__(self) -> None:
        self.shift: Dict[str, np.ndarray] = {}
        self.first: Dict[str, np.ndarray] = {}
        self.second: Dict[str, np.ndarray] = {}

    def add(self, name: str, values: np.ndarray, weights: np.ndarray) -> None:
        if name not in self.shift:
            self.shift[name] = values[0].copy()
            self.first[name] = np.zeros_like(values[0])
            self.second[name] = np.zeros_like(values[0])
        delta = values - self.shift[name]
        w = weights.reshape((-1,) + (1,) * (values.ndim - 1))
        self.first[name] += np.sum(w * delta, axis=0)
        self.second[name] += np.sum(w * delta * delta, axis=0)

    def result(self):
        mean, std = {}, {}
        for name, shift in self.shift.items():
            first = self.first[name]
            mean[name] = shift + first
            std[name] = np.sqrt(np.clip(self.second[name] - first * first, 0.0, None))
        return mean, std


def average_chunks(
    chunks: Iterable[Tuple[int, int, Dict[str, np.ndarray]]], quadrature: O3Quadrature, *, keep_samples: bool = True
) -> SymmetrizedPrediction:
    """Back-rotate and average rotated-frame chunks ``(start, stop, {name: array})``
    (indices into ``quadrature``'s operations, the format every backend yields) into
    a :class:`SymmetrizedPrediction`. Each chunk is folded into running weighted sums
    and dropped unless ``keep_samples``."""
    from ase_symdiag.o3.transforms import voigt_from_tensor

    moments = _RunningMoments()
    kept: Dict[str, list] = {}
    rotations = np.asarray(quadrature.rotations)
    weights = np.asarray(quadrature.weights)
    for start, stop, chunk in chunks:
        predictions = Predictions(**{name: chunk.get(name) for name in _PREDICTION_FIELDS})
        values = back_rotated(predictions, rotations[start:stop])
        for name in ("stress", "direct_stress"):
            if name in values:
                values[name + ":voigt"] = voigt_from_tensor(values[name])
        for name, value in values.items():
            moments.add(name, value, weights[start:stop])
            if keep_samples and not name.endswith(":voigt"):
                kept.setdefault(name, []).append(value)
    mean, std = moments.result()
    for name in [n for n in mean if n.endswith(":voigt")]:
        del mean[name]
    samples = {name: np.concatenate(parts) for name, parts in kept.items()}
    return SymmetrizedPrediction(mean=mean, std=std, quadrature=quadrature, samples=samples)


_PREDICTION_FIELDS = ("energy", "forces", "stress", "energies", "direct_forces", "direct_stress", "energy_uncertainty")
