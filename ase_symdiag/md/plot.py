"""The MD report: a text table of the variants' summaries and one four-panel figure."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence


def summary_table(summaries: Sequence[Dict[str, Any]]) -> str:
    """One row per variant summary (see :func:`~ase_symdiag.md.observables.summarize`)."""
    from ase_symdiag.report import format_table

    headers = ["variant", "steps", "time ps", "drift meV/at/ps", "T mean K", "T std K", "|L| drift", "P GPa", "min d A", "failure"]
    rows = []
    for s in summaries:
        failure = "-"
        if s.get("failure_reason"):
            failure = f"{s['failure_time_ps']:.4g} ps: {s['failure_reason']}"
        rows.append([
            s["variant"], s["steps_done"], s["time_ps"], s.get("drift_meV_per_atom_per_ps"),
            s.get("temperature_mean_K"), s.get("temperature_std_K"), s.get("angular_momentum_drift"),
            s.get("pressure_mean_GPa"), s.get("min_distance_A"), failure,
        ])
    return format_table(headers, rows)


def plot_md(results: Mapping[str, Any], path: str) -> None:
    """``results``: ``{variant: md.runner.VariantResult}`` (the runner imports this
    module, so the type is named, not imported). Energy (meV/atom from the start), temperature (K), pressure (GPa; |L| in amu Å²/fs
    for finite systems) and minimum distance (Å) against time (ps), one curve per
    variant, a cross where a variant failed; written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    periodic = any(bool(v.summary.get("pressure_mean_GPa") is not None) for v in results.values())
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [
        (axes[0, 0], "total energy - E(0), meV/atom"),
        (axes[0, 1], "temperature, K"),
        (axes[1, 0], "pressure, GPa" if periodic else "|L|, amu Å²/fs"),
        (axes[1, 1], "minimum distance, Å"),
    ]
    for name, result in results.items():
        r = result.records
        if len(r["step"]) == 0:
            continue
        t = r["time_fs"] / 1000.0
        n = max(result.summary["atoms"], 1)
        energy = r["etot_eV"] if result.summary["ensemble"] == "nve" else r["conserved_eV"]
        series = [
            (energy - energy[0]) * 1000.0 / n,
            r["temperature_K"],
            r["pressure_GPa"] if periodic else r["angular_momentum"],
            r["min_distance_A"],
        ]
        for (ax, _), y in zip(panels, series):
            (line,) = ax.plot(t, y, label=name, lw=1)
            if result.failed:
                ax.plot(t[-1], y[-1], "x", color=line.get_color(), ms=8)
    for ax, label in panels:
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("time, ps")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
