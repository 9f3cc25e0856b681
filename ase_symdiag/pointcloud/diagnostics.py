"""The symmetry diagnostics on generic decorated point clouds (no ASE, no metatomic).

The model is any torch callable on a decorated point cloud, evaluated on rotated
copies by :mod:`ase_symdiag.backends.pointcloud` (which defines the output kinds and
their :class:`~ase_symdiag.backends.pointcloud.OutputRule`).

The functions mirror the atomistic ones and share their arithmetic:
:func:`equivariance_errors` (:mod:`ase_symdiag.metrics.equivariance`), :func:`output_spectra`
(:func:`ase_symdiag.metrics.spectrum.output_spectrum`)
and :func:`layer_content` (same aggregation as
:func:`ase_symdiag.drivers.representations.representation_content`, returning its
:class:`~ase_symdiag.metrics.representations.RepresentationReport`). ``tests/pointcloud/test_pointcloud.py``
checks that they give the atomistic numbers on a metatomic model to 1e-10.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ase_symdiag.backends.pointcloud import (
    PER_POINT_KINDS,
    OutputRule,
    Rules,
    as_array,
    call_batch,
    evaluate_rotated,
    resolve_rules,
)
from ase_symdiag.errors import UsageError
from ase_symdiag.metrics.representations import LayerAccumulator, RepresentationReport
from ase_symdiag.metrics.spectrum import OutputSpectrum, channel_key, output_spectrum
from ase_symdiag.o3.operations import haar_rotations, validate_rotations
from ase_symdiag.o3.quadrature import O3Quadrature, smallest_exact_quadrature

__all__ = [
    "OutputErrors",
    "PointCloudErrors",
    "equivariance_errors",
    "output_spectra",
    "layer_content",
    "spectra_table",
    "errors_table",
    "analyse_model",
]

# --------------------------------------------------------------------------------------
# Equivariance errors
# --------------------------------------------------------------------------------------


@dataclass
class OutputErrors:
    """Errors of one output over K operations, measured on g(R) - g(1).

    ``rms``: RMS over operations, points and components; ``max``: max over operations
    (and points, for per-point outputs) of the norm of the error of one item (a
    point's value, or the whole event-level output); ``reference_rms``: RMS of the
    unrotated output; ``relative = rms / reference_rms``. For outputs with a trailing
    class axis (logits), ``label_flip`` is the fraction of (operation, item) pairs
    whose argmax changes. Equal to the atomistic ``VectorErrors``/``TensorErrors``
    numbers since R is orthogonal (|dF R| = |dF|).
    """

    kind: str
    rms: float
    max: float
    reference_rms: float
    relative: float
    per_operation_rms: List[float]
    label_flip: Optional[float] = None


@dataclass
class PointCloudErrors:
    """Result of :func:`equivariance_errors` for one point cloud."""

    label: str
    n_points: int
    outputs: Dict[str, OutputErrors]

    def to_dict(self) -> dict:
        return {"label": self.label, "n_points": self.n_points, "outputs": {k: asdict(v) for k, v in self.outputs.items()}}


def _item_norms(diff: np.ndarray, kind: str) -> np.ndarray:
    """(K, items) norms of the error of each item (point or event output)."""
    K = diff.shape[0]
    if kind in PER_POINT_KINDS:
        return np.linalg.norm(diff.reshape(K, diff.shape[1], -1), axis=2)
    return np.linalg.norm(diff.reshape(K, 1, -1), axis=2)


def _errors(samples: np.ndarray, kind: str, classes: bool) -> OutputErrors:
    reference = samples[0]
    diff = samples[1:] - reference[None]
    K = diff.shape[0]
    reference_rms = float(np.sqrt(np.mean(reference**2))) if reference.size else 0.0
    rms = float(np.sqrt(np.mean(diff**2)))
    flip = None
    if classes and reference.ndim >= 1 and reference.shape[-1] > 1:
        flip = float(np.mean(np.argmax(samples[1:], axis=-1) != np.argmax(reference, axis=-1)[None]))
    return OutputErrors(
        kind=kind,
        rms=rms,
        max=float(_item_norms(diff, kind).max()),
        reference_rms=reference_rms,
        relative=rms / reference_rms if reference_rms > 0 else float("inf") if rms > 0 else 0.0,
        per_operation_rms=np.sqrt(np.mean(diff.reshape(K, -1) ** 2, axis=1)).tolist(),
        label_flip=flip,
    )


def equivariance_errors(
    fn: Callable,
    positions,
    decorations,
    rotations=None,
    rules: Rules = None,
    *,
    n_rotations: int = 8,
    seed: Optional[int] = 0,
    batch_size: int = 16,
    center=None,
    label: str = "",
    dtype: torch.dtype = torch.float64,
) -> PointCloudErrors:
    """Per-output equivariance errors of ``fn`` under ``rotations`` (default:
    ``n_rotations`` Haar-random O(3) operations from ``seed``, every second one
    improper, as :func:`ase_symdiag.check_equivariance`). The unrotated cloud is
    evaluated in the same batches. ``label_flip`` is reported for scalar and
    point_scalar outputs with a class axis (argmax of logits/probabilities)."""
    rules = resolve_rules(rules)
    if rotations is None:
        rotations = haar_rotations(n_rotations, seed)
    R = validate_rotations(rotations)
    with_identity = np.concatenate([np.eye(3)[None], R])
    samples = evaluate_rotated(fn, positions, decorations, with_identity, rules, batch_size=batch_size, center=center, dtype=dtype)
    n = int(np.asarray(as_array(positions)).shape[0])
    outputs = {}
    for name, rule in rules.items():
        values = samples[name]
        classes = rule.kind == "scalar" and values.ndim >= 2 or rule.kind == "point_scalar" and values.ndim >= 3
        outputs[name] = _errors(values, rule.kind, classes)
    return PointCloudErrors(label=label, n_points=n, outputs=outputs)


def errors_table(results: Sequence[PointCloudErrors]) -> str:
    from ase_symdiag.report import format_table

    headers = ["cloud", "output", "kind", "rms", "max", "ref rms", "relative", "argmax flips"]
    rows = []
    for r in results:
        for name, e in r.outputs.items():
            rows.append([r.label, name, e.kind, e.rms, e.max, e.reference_rms, e.relative, e.label_flip])
    return format_table(headers, rows)


# --------------------------------------------------------------------------------------
# Spectra
# --------------------------------------------------------------------------------------


def _quadrature(lmax: int, quadrature: Optional[O3Quadrature]) -> O3Quadrature:
    if quadrature is None:
        return smallest_exact_quadrature(2 * lmax)
    if quadrature.degree < 2 * lmax:
        raise UsageError(
            f"quadrature '{quadrature.name}' is exact to degree {quadrature.degree}, lambda <= {lmax} needs {2 * lmax}"
        )
    return quadrature


def output_spectra(
    fn: Callable,
    positions,
    decorations,
    lmax: int = 3,
    rules: Rules = None,
    *,
    quadrature: Optional[O3Quadrature] = None,
    batch_size: int = 16,
    center=None,
    dtype: torch.dtype = torch.float64,
) -> Dict[str, OutputSpectrum]:
    """Channel powers (lambda <= lmax, parity) of every output's back-rotated g(R),
    on a quadrature exact to ``2 lmax`` (default: the smallest available)."""
    rules = resolve_rules(rules)
    quadrature = _quadrature(lmax, quadrature)
    samples = evaluate_rotated(
        fn, positions, decorations, quadrature.rotations, rules, batch_size=batch_size, center=center, dtype=dtype
    )
    return {
        name: output_spectrum(name, samples[name], quadrature, lmax, per_item=rule.per_point, unit=rule.unit)
        for name, rule in rules.items()
    }


def mean_spectra(spectra: Sequence[Dict[str, OutputSpectrum]]) -> Dict[str, OutputSpectrum]:
    """Average of per-cloud spectra (powers, mean squares and variances are means)."""
    out = {}
    for name in spectra[0]:
        items = [s[name] for s in spectra]
        out[name] = OutputSpectrum(
            output=name,
            unit=items[0].unit,
            mean_square=float(np.mean([s.mean_square for s in items])),
            variance=float(np.mean([s.variance for s in items])),
            power={c: float(np.mean([s.power[c] for s in items])) for c in items[0].power},
            unresolved=float(np.mean([s.unresolved for s in items])),
        )
    return out


def spectra_table(spectra: Dict[str, Dict[str, OutputSpectrum]], lmax: int) -> str:
    """Rows: model/cloud x output; columns: relative breaking and sqrt(power) per channel."""
    from ase_symdiag.report import format_table

    channels = [(l, s) for l in range(lmax + 1) for s in (1, -1) if (l, s) != (0, 1)]
    headers = ["model", "output", "rms", "rms breaking", "breaking/rms"] + [channel_key(c) for c in channels] + [f">{lmax}"]
    rows = []
    for label, outputs in spectra.items():
        for name, out in outputs.items():
            rms = float(np.sqrt(out.mean_square))
            rows.append(
                [label, name, rms, float(np.sqrt(out.variance)), float(np.sqrt(out.variance)) / rms if rms > 0 else None]
                + [float(np.sqrt(out.power[c])) if c in out.power else None for c in channels]
                + [float(np.sqrt(out.unresolved))]
            )
    return (
        "RMS amplitude of the symmetry breaking of g(R) in each O(3) channel (lambda, parity)\n"
        + format_table(headers, rows)
    )


# --------------------------------------------------------------------------------------
# Layer content
# --------------------------------------------------------------------------------------

Cloud = Tuple[object, object]


def layer_content(
    fn_features: Callable,
    clouds: Union[Cloud, Sequence[Cloud]],
    lmax: int = 3,
    *,
    layers: Optional[Sequence[str]] = None,
    quadrature: Optional[O3Quadrature] = None,
    batch_size: int = 16,
    center=None,
    model: str = "",
    dtype: torch.dtype = torch.float64,
) -> RepresentationReport:
    """Character projection of per-layer features ``fn_features(pos, dec) -> {layer: (M, d)}``
    (M = points or patches; rows must correspond between rotated copies, which holds
    when the row order is chosen invariantly) as functions of the orientation.

    ``clouds``: one ``(positions, decorations)`` pair or a list of them. Aggregation
    as :func:`ase_symdiag.drivers.representations.representation_content`: powers summed over
    rows and averaged over clouds; the features are not transformed.
    """
    if isinstance(clouds, tuple) and len(clouds) == 2 and isinstance(clouds[0], (np.ndarray, torch.Tensor)) and clouds[0].ndim == 2:
        clouds = [clouds]
    clouds = list(clouds)
    if not clouds:
        raise UsageError("no point clouds given")
    quadrature = _quadrature(lmax, quadrature)
    accumulator = LayerAccumulator(quadrature, lmax)
    names: Optional[List[str]] = list(layers) if layers else None
    for positions, decorations in clouds:
        if names is None:
            probe = call_batch(
                fn_features,
                torch.as_tensor(as_array(positions), dtype=dtype)[None],
                torch.as_tensor(as_array(decorations), dtype=dtype).reshape(1, len(as_array(positions)), -1),
                bool(getattr(fn_features, "batched", False)),
            )
            names = list(probe)
        rules = {name: OutputRule("point_scalar") for name in names}
        samples = evaluate_rotated(
            fn_features, positions, decorations, quadrature.rotations, rules,
            batch_size=batch_size, center=center, back_rotate=False, dtype=dtype,
        )
        for name in names:
            accumulator.add(name, samples[name])
    contents = accumulator.contents()
    return RepresentationReport(model, lmax, quadrature.name, len(clouds), contents)


# --------------------------------------------------------------------------------------
# Command line (registered by ase_symdiag.cli.app)
# --------------------------------------------------------------------------------------


def analyse_model(model, events: Dict[str, np.ndarray], *, lmax: int = 3, n_rotations: int = 16, seed: int = 0,
                  label: str = "model", batch_size: int = 32, spectrum_events: Optional[int] = None) -> dict:
    """Errors, spectra and layer content of a :class:`ase_symdiag.pointcloud.pointnet.PointNetSegmenter`
    on ``events`` (a :func:`ase_symdiag.pointcloud.lartpc.make_dataset` dict); spectra and layers on
    the first ``spectrum_events`` of them (default all). Evaluated in float64."""
    from ase_symdiag.pointcloud.pointnet import as_callables

    outputs_fn, features_fn, rules = as_callables(model)
    clouds = [(events["positions"][i], events["energy"][i]) for i in range(len(events["positions"]))]
    errors = [
        equivariance_errors(outputs_fn, pos, dec, rules=rules, n_rotations=n_rotations, seed=seed + i,
                            batch_size=batch_size, label=f"event{i}")
        for i, (pos, dec) in enumerate(clouds)
    ]
    quad = smallest_exact_quadrature(2 * lmax)
    few = clouds[:spectrum_events] if spectrum_events else clouds
    spectra = mean_spectra([output_spectra(outputs_fn, pos, dec, lmax, rules, quadrature=quad, batch_size=batch_size)
                            for pos, dec in few])
    content = layer_content(features_fn, few, lmax, quadrature=quad, batch_size=batch_size, model=label)
    summary = {}
    for name in rules:
        items = [e.outputs[name] for e in errors]
        summary[name] = {
            "relative_rms": float(np.sqrt(np.mean([x.rms**2 for x in items])) / np.sqrt(np.mean([x.reference_rms**2 for x in items]))),
            "rms": float(np.sqrt(np.mean([x.rms**2 for x in items]))),
            "max": float(max(x.max for x in items)),
            "label_flip": float(np.mean([x.label_flip for x in items])) if items[0].label_flip is not None else None,
        }
    return {"errors": errors, "error_summary": summary, "spectra": spectra, "layers": content, "quadrature": quad.name,
            "n_error_events": len(clouds), "n_spectrum_events": len(few)}
