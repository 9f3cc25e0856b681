"""Rotated evaluations of any torch callable on a decorated point cloud (no ASE, no metatomic).

A model is any torch callable ``fn(positions, decorations) -> {name: tensor}`` on one
point cloud: ``positions`` (N, 3), ``decorations`` (N, F) (per-point features that do
not transform: deposited energy, atomic type, ...). Each output has an
:class:`OutputRule` saying how it transforms under an O(3) operation R (x' = x R^T):

=============  ============  =====================================================
kind           shape         transformation / back-rotation g(R)
=============  ============  =====================================================
scalar         (...)         invariant per event (energy, event logits)
point_scalar   (N, ...)      invariant per point (segmentation logits, energies)
vector         (3,)          v -> v R^T;       g(R) = v(Rx) R
point_vector   (N, 3)        rows rotate;      g(R) = F(Rx) R (forces)
tensor2        (3, 3)        S -> R S R^T;     g(R) = R^T S(Rx) R (stress)
=============  ============  =====================================================

A callable with attribute ``batched = True`` is instead called on (B, N, 3) and
(B, N, F) and returns outputs with a leading B (used to evaluate many rotated
copies at once); one with ``needs_grad = True`` is called with autograd enabled
(forces by differentiation), otherwise under ``torch.no_grad()``. Rotations act
about ``center`` (default the origin): ``x' = (x - c) R^T + c``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Union

import numpy as np
import torch

from ase_symdiag.errors import ModelEvaluationError, StructureError, UsageError
from ase_symdiag.o3.operations import validate_rotations
from ase_symdiag.o3.transforms import back_rotate_tensors, back_rotate_vectors

__all__ = ["KINDS", "PER_POINT_KINDS", "OutputRule", "Rules", "as_array", "call_batch", "evaluate_rotated", "resolve_rules"]

KINDS = ("scalar", "point_scalar", "vector", "point_vector", "tensor2")
PER_POINT_KINDS = ("point_scalar", "point_vector")


@dataclass(frozen=True)
class OutputRule:
    """How one output transforms: ``kind`` in :data:`KINDS`; ``unit`` for reports."""

    kind: str
    unit: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown output kind {self.kind!r}; use one of {KINDS}")

    @property
    def per_point(self) -> bool:
        return self.kind in PER_POINT_KINDS


Rules = Mapping[str, Union[OutputRule, str]]


def resolve_rules(rules: Rules) -> Dict[str, OutputRule]:
    if not rules:
        raise UsageError("give at least one output rule")
    return {name: rule if isinstance(rule, OutputRule) else OutputRule(rule) for name, rule in rules.items()}


def as_array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def call_batch(fn, positions: torch.Tensor, decorations: torch.Tensor, batched: bool) -> Dict[str, np.ndarray]:
    """Run ``fn`` on (B, N, 3) inputs, returning numpy (B, ...) outputs."""
    if batched:
        out = fn(positions, decorations)
        return {k: as_array(v) for k, v in out.items()}
    results: Dict[str, list] = {}
    for b in range(positions.shape[0]):
        for k, v in fn(positions[b], decorations[b]).items():
            results.setdefault(k, []).append(as_array(v))
    return {k: np.stack(v) for k, v in results.items()}


def evaluate_rotated(
    fn: Callable,
    positions,
    decorations,
    rotations,
    rules: Rules,
    *,
    batch_size: int = 16,
    center=None,
    back_rotate: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Dict[str, np.ndarray]:
    """``fn`` on the point cloud rotated by each of ``rotations`` (K, 3, 3).

    Returns ``{name: (K, ...)}`` float64 for every output named in ``rules``: the
    back-rotated samples g(R_k) (``back_rotate=True``) or the raw rotated-frame
    outputs. Positions are rotated in float64 and cast to ``dtype`` for ``fn``.
    """
    rules = resolve_rules(rules)
    R = validate_rotations(rotations)
    pos = np.asarray(as_array(positions))
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise StructureError(f"positions must have shape (N, 3), got {pos.shape}")
    dec = as_array(decorations) if decorations is not None else np.zeros((pos.shape[0], 0))
    if dec.ndim == 1:
        dec = dec[:, None]
    c = np.zeros(3) if center is None else np.asarray(center, dtype=np.float64).reshape(3)
    batched = bool(getattr(fn, "batched", False))
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    chunks: Dict[str, list] = {name: [] for name in rules}
    dec_t = torch.as_tensor(dec, dtype=dtype)
    for start in range(0, len(R), batch_size):
        Rb = R[start : start + batch_size]
        rotated = (pos - c)[None] @ np.swapaxes(Rb, 1, 2) + c  # (B, N, 3)
        with torch.no_grad() if not getattr(fn, "needs_grad", False) else torch.enable_grad():
            out = call_batch(fn, torch.as_tensor(rotated, dtype=dtype), dec_t.expand(len(Rb), *dec.shape), batched)
        for name, rule in rules.items():
            if name not in out:
                raise ModelEvaluationError(f"the callable returned no output '{name}' (it returned {sorted(out)})")
            values = out[name]
            if back_rotate:
                if rule.kind == "vector":
                    values = back_rotate_vectors(values[:, None, :], Rb)[:, 0]
                elif rule.kind == "point_vector":
                    values = back_rotate_vectors(values, Rb)
                elif rule.kind == "tensor2":
                    values = back_rotate_tensors(values, Rb)
            chunks[name].append(values)
    return {name: np.concatenate(v) for name, v in chunks.items()}
