"""The figures of the metric reports, drawn at the reporting edge.

Metrics (:mod:`ase_symdiag.metrics`) are pure functions of samples and draw nothing;
this module turns their reports into PNGs (or any file ending matplotlib writes,
``cli.common.plot_file``). Each figure is written atomically
(:func:`ase_symdiag.report.atomic_savefig`) and closed; matplotlib is imported only
when a figure is asked for, with the non-interactive ``Agg`` backend.

- :func:`plot_channels` / :func:`plot_spectra`: the breaking spectrum (docs/methods.md §3);
- :func:`plot_representations`: symmetry content of learned layers (§5);
- :func:`plot_calibration`: rotational spread as an uncertainty (§9).

The products draw their own figures (``md/plot.py``, ``md/statistics.py``,
``compare.py``, ``reference/probes.py``); the point-cloud spectrum
(``pointcloud/training.py``) draws its channels with :func:`plot_channels`.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from ase_symdiag.metrics.representations import RepresentationReport
from ase_symdiag.metrics.spectrum import OutputSpectrum, StructureSpectrum, channel_key
from ase_symdiag.metrics.uncertainty import UncertaintyReport


def _pyplot():
    """``matplotlib.pyplot`` on the non-interactive ``Agg`` backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str) -> None:
    """Write ``figure`` atomically to ``path`` and close it (``atomic_savefig`` looked
    up at call time, so a test can replace it)."""
    from ase_symdiag.report import atomic_savefig

    atomic_savefig(figure, path)
    _pyplot().close(figure)


def plot_channels(ax, out: OutputSpectrum, lmax: int, label: str, scale: float = 1.0) -> None:
    """Draw one output's breaking channels (RMS amplitude against lambda, one line per
    parity, ``(0, +)`` left out) on a matplotlib ``ax``, amplitudes times ``scale``."""
    for sigma, marker, style in ((1, "o", "-"), (-1, "s", "--")):
        ls = [l for l in range(lmax + 1) if (l, sigma) in out.power and (l, sigma) != (0, 1)]
        amps = [max(out.rms(out.power[(l, sigma)]) * scale, 1e-300) for l in ls]
        if ls:
            ax.semilogy(ls, amps, marker=marker, linestyle=style, label=f"{label} {'+' if sigma > 0 else '-'}")


def plot_spectra(spectra: List[StructureSpectrum], path: str) -> None:
    """RMS amplitude against lambda (log scale), one panel per output, one line per
    structure and parity; the unresolved part (above lmax) as a cross at ``lmax + 1``."""
    plt = _pyplot()
    names = []
    for spectrum in spectra:
        names += [n for n in spectrum.outputs if n not in names]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for spectrum in spectra:
            out = spectrum.outputs.get(name)
            if out is None:
                continue
            plot_channels(ax, out, spectrum.lmax, spectrum.label)
            # what lies above lmax (unresolved) at x = lmax + 1, so it is never out of sight
            ax.semilogy(
                [spectrum.lmax + 1], [max(out.rms(out.unresolved), 1e-300)], marker="X", linestyle="none",
                markersize=9, markeredgecolor="k", label=f"{spectrum.label} >{spectrum.lmax} (unresolved)",
            )
        top = max(s.lmax for s in spectra)
        ticks = sorted({l for l in range(top + 1)} | {s.lmax + 1 for s in spectra})
        ax.set_xticks(ticks, [str(t) if t <= top else f">{t - 1}" for t in ticks])
        ax.set_xlabel("lambda ('>L': unresolved, above lmax)")
        ax.set_ylabel(f"RMS breaking ({'eV' if name == 'energy' else 'eV/A per component' if 'forces' in name else 'eV/A^3'})")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_representations(reports: Dict[str, RepresentationReport], path: str) -> None:
    """Heat map(s): layers x channels, colour = fraction of the mean square (log scale),
    one panel per report (titled by its key), the invariant fraction written in (0, +)."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    n_layers = max(len(r.layers) for r in reports.values())
    fig, axes = plt.subplots(
        1, len(reports), figsize=(3.6 * len(reports) + 1.2, 1.6 + 0.45 * n_layers),
        squeeze=False, constrained_layout=True,
    )
    image = None
    for ax, (title, report) in zip(axes[0], reports.items()):
        channels = [(l, s) for l in range(report.lmax + 1) for s in (1, -1)]
        data = np.array([[max(layer.fractions.get(c, 0.0), 1e-16) for c in channels] for layer in report.layers])
        image = ax.imshow(data, norm=LogNorm(vmin=1e-8, vmax=1.0), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(channels)), [channel_key(c) for c in channels])
        ax.set_yticks(range(len(report.layers)), [layer.layer.split("::")[-1] for layer in report.layers])
        ax.set_xlabel("(lambda, parity)")
        ax.set_title(title, fontsize=9)
        for i, layer in enumerate(report.layers):
            ax.text(0, i, f"{layer.invariant_fraction:.3f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(image, ax=axes[0].tolist(), label="fraction of <|h|^2>")
    _save(fig, path)


def plot_calibration(report: UncertaintyReport, path: str) -> None:
    """Observed against nominal Gaussian coverage for each spread (diagonal: calibrated)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for quality in report.qualities:
        nominal, observed = quality.calibration
        ax.plot(nominal, observed, marker="o", ms=3, label=quality.quantity)
    ax.set_xlabel("nominal Gaussian coverage")
    ax.set_ylabel("observed fraction of errors within")
    ax.set_title(f"{report.prediction} errors vs spread ({report.quadrature})", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
