"""Symmetry content of learned representations, layer by layer (docs/methods.md §5).

For a layer's per-atom features h(x) and the function R -> h(Rx) on O(3), the
character projection onto the irrep (lambda, sigma) splits the mean square of h over
the group into channels: ``<|h|^2> = sum_{lambda,sigma} |P_{lambda,sigma} h|^2``. The
invariant fraction ``|P_{0,+} h|^2 / <|h|^2>`` is 1 for an invariant layer; the rest
says in which angular channels the orientation dependence lives. A constant offset
of a feature counts as invariant (it sits in (0, +)).

Powers are computed with :func:`ase_symdiag.metrics.spectrum.channel_powers` on a quadrature
exact to ``2 lmax`` (the projection of a band-limited feature is then exact);
``unresolved`` is the part above ``lmax``.

Only *learned* per-atom features are layers: outputs named ``feature``/``features``
or ``mtt::features::*`` / ``mtt::feature::*`` with per-atom samples, or per-pair
samples (``atom_pair``: the edge features of metatrain's PET, whose every layer a
checkpoint exposes through :mod:`ase_symdiag.backends.metatomic.metatrain`; powers
are then summed over pairs). Auxiliary outputs (``mtt::aux::*``,
e.g. metatrain's cutoff statistics) and feature outputs without per-atom samples
are skipped and named (:func:`skipped_outputs`). Fractions are ratios of sums of
squares, so round-off can put them a few ulp outside [0, 1] (an exactly invariant
layer printed ``1 - invariant = -6.66e-16``): the invariant fraction and
``1 - invariant`` are clamped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np

from ase_symdiag.metrics.spectrum import Channel, channel_key, channel_powers
from ase_symdiag.o3.quadrature import O3Quadrature

#: prefixes of learned feature outputs
FEATURE_PREFIXES = ("mtt::features::", "mtt::feature::")
#: prefixes of auxiliary outputs (not learned features: statistics, diagnostics)
AUXILIARY_PREFIXES = ("mtt::aux::",)
#: sample kinds of layers: per-atom (node) features and per-pair (edge) features
LAYER_SAMPLE_KINDS = ("atom", "atom_pair")


def _looks_like_feature(name: str) -> bool:
    return name in ("feature", "features") or name.startswith(FEATURE_PREFIXES + AUXILIARY_PREFIXES)


def feature_outputs(handle: Any) -> List[str]:
    """Learned per-atom feature outputs a model exposes (``feature``, ``mtt::features::*``);
    ``handle``: anything with ``outputs``, ``{name: metatomic ModelOutput}`` (a ModelHandle)."""
    names = []
    skipped = skipped_outputs(handle)
    for name in handle.outputs:
        if _looks_like_feature(name) and name not in skipped and name not in names:
            names.append(name)
    # metatomic aliases the deprecated 'features' to 'feature': keep one of them
    if "feature" in names and "features" in names:
        names.remove("features")
    return names


def skipped_outputs(handle: Any) -> Dict[str, str]:
    """Feature-like outputs that are not learned per-atom features: ``{name: why}``;
    ``handle`` as for :func:`feature_outputs`."""
    skipped = {}
    for name, output in handle.outputs.items():
        if not _looks_like_feature(name):
            continue
        if name.startswith(AUXILIARY_PREFIXES):
            skipped[name] = "auxiliary output, not a learned feature"
        elif output.sample_kind not in LAYER_SAMPLE_KINDS:
            skipped[name] = f"not per-atom (sample_kind '{output.sample_kind}')"
    return skipped


def _unit_interval(value: float) -> float:
    """Clamp round-off to [0, 1]."""
    return min(max(float(value), 0.0), 1.0)


@dataclass
class LayerContent:
    """Channel powers of one layer, summed over atoms and feature channels.

    ``power[(l, sigma)]`` and ``per_feature[(l, sigma)]`` (d,) are means over
    structures of the per-structure sums over atoms; ``fractions`` divide by the
    total (``mean_square``).
    """

    layer: str
    n_features: int
    mean_square: float
    power: Dict[Channel, float]
    unresolved: float
    per_feature: Dict[Channel, np.ndarray] = field(default_factory=dict)

    @property
    def fractions(self) -> Dict[Channel, float]:
        total = self.mean_square if self.mean_square > 0 else 1.0
        return {c: p / total for c, p in self.power.items()}

    @property
    def invariant_fraction(self) -> float:
        """``|P_{0,+} h|^2 / <|h|^2>``, clamped to [0, 1] (round-off)."""
        return _unit_interval(self.fractions.get((0, 1), 0.0))

    @property
    def breaking_fraction(self) -> float:
        """``1 - invariant_fraction``, in [0, 1]."""
        return _unit_interval(1.0 - self.invariant_fraction)

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "n_features": self.n_features,
            "mean_square": self.mean_square,
            "invariant_fraction": self.invariant_fraction,
            "one_minus_invariant": self.breaking_fraction,
            "fractions": {channel_key(c): f for c, f in self.fractions.items()},
            "unresolved_fraction": self.unresolved / self.mean_square if self.mean_square > 0 else 0.0,
            "per_feature_invariant_fraction": (
                self.per_feature[(0, 1)] / np.maximum(sum(self.per_feature.values()), 1e-300)
            ).tolist() if self.per_feature else [],
        }


@dataclass
class RepresentationReport:
    """Per-layer symmetry content of a model on a set of structures."""

    model: str
    lmax: int
    quadrature: str
    n_structures: int
    layers: List[LayerContent]
    skipped: Dict[str, str] = field(default_factory=dict)  # feature-like outputs not analysed, and why

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "lmax": self.lmax,
            "quadrature": self.quadrature,
            "n_structures": self.n_structures,
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": self.skipped,
        }

    def table(self) -> str:
        from ase_symdiag.report import format_table

        channels = [(l, s) for l in range(self.lmax + 1) for s in (1, -1)]
        headers = ["layer", "features", "invariant", "1 - invariant"] + [channel_key(c) for c in channels if c != (0, 1)] + [f">{self.lmax}"]
        rows = []
        for layer in self.layers:
            fractions = layer.fractions
            rows.append(
                [layer.layer, layer.n_features, layer.invariant_fraction, layer.breaking_fraction]
                + [fractions.get(c) for c in channels if c != (0, 1)]
                + [layer.unresolved / layer.mean_square if layer.mean_square > 0 else 0.0]
            )
        skipped = (
            "\nskipped (not learned per-atom features): "
            + "; ".join(f"{name} ({why})" for name, why in self.skipped.items())
            if self.skipped else ""
        )
        return (
            f"fraction of each layer's mean square feature in each O(3) channel (lambda, parity); "
            f"{self.n_structures} structures, quadrature {self.quadrature}\n" + format_table(headers, rows) + skipped
        )


class LayerAccumulator:
    """Sums channel powers of per-point features over structures (or events).

    ``add(name, values)`` takes the features of one structure under every operation of
    the quadrature, (K, M, d) for M atoms/points/patches and d channels; powers are
    summed over the M samples and averaged over the structures added.
    """

    def __init__(self, quadrature: O3Quadrature, lmax: int) -> None:
        self.quadrature = quadrature
        self.lmax = lmax
        self._power: Dict[str, Dict[Channel, np.ndarray]] = {}
        self._square: Dict[str, np.ndarray] = {}
        self._count: Dict[str, int] = {}

    def add(self, name: str, values: np.ndarray) -> None:
        values = values.reshape(values.shape[0], values.shape[1], -1)
        powers = channel_powers(values, self.quadrature, self.lmax)  # {(l,s): (M, d)}
        w = self.quadrature.weights.reshape(-1, 1, 1)
        square = np.sum(w * values**2, axis=0).sum(axis=0)  # (d,)
        per_channel = {c: p.sum(axis=0) for c, p in powers.items()}
        if name not in self._power:
            self._power[name], self._square[name], self._count[name] = per_channel, square, 0
        else:
            self._power[name] = {c: self._power[name][c] + per_channel[c] for c in per_channel}
            self._square[name] = self._square[name] + square
        self._count[name] += 1

    def contents(self) -> List[LayerContent]:
        out = []
        for name, acc in self._power.items():
            n = self._count[name]
            per_feature = {c: v / n for c, v in acc.items()}
            square = self._square[name] / n
            power = {c: float(v.sum()) for c, v in per_feature.items()}
            mean_square = float(square.sum())
            out.append(
                LayerContent(
                    layer=name,
                    n_features=int(square.shape[0]),
                    mean_square=mean_square,
                    power=power,
                    unresolved=max(mean_square - sum(power.values()), 0.0),
                    per_feature=per_feature,
                )
            )
        return out
