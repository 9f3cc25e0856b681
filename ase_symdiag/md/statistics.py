"""Survival statistics of MD stability runs: how often and how soon replicas fail.

Input: per-replica summaries (:func:`ase_symdiag.md.summarize`, with
``temperature_set_K``), grouped by variant. A replica that fails at time ``t`` is an
*event* at ``t``; one that reaches the end of the run at ``t_max`` is *censored* there
(its failure time is only known to exceed ``t_max``). Per variant and temperature:

- ``failure_fraction`` with the exact (Clopper-Pearson) binomial interval;
- the Kaplan-Meier survival curve ``S(t)`` (fraction of replicas still stable) with
  pointwise log-log intervals from Greenwood's variance (the "log-log" curve of
  R's ``survival``, which stays inside [0, 1]);
- ``median_ttf_ps``: the first time ``S(t) <= 1/2``, with the interval from where the
  pointwise band crosses 1/2 (Brookmeyer-Crowley style; ``None``: not reached);
- ``mttf_ps``: mean time to failure under a constant failure rate (exponential model,
  censoring handled exactly: total time at risk / failures), with the exact chi-square
  interval; with no failure only the lower bound exists;
- ``rmst_ps``: restricted mean survival time up to ``t_max`` (area under S);

and, for each temperature, each variant against the first one (the reference,
normally ``raw``): the log-rank test of the survival curves and Fisher's exact test
of the failure counts (two-sided p-values).

:func:`plot_survival` draws one panel per temperature, one curve (with its band) per
variant; :func:`survival_statistics` returns the JSON-ready dict behind it.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Exact binomial interval for ``k`` successes out of ``n``."""
    from scipy.stats import beta

    if n == 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def kaplan_meier(times: Sequence[float], events: Sequence[bool], confidence: float = 0.95) -> Dict[str, List[float]]:
    """Kaplan-Meier estimate as a step function.

    Returns ``time`` (0 and each distinct event time), ``survival`` (S just after that
    time), ``lower``/``upper`` (log-log pointwise interval), ``at_risk`` (replicas at
    risk just before), ``events`` (failures at that time).
    """
    from scipy.stats import norm

    t = np.asarray(times, dtype=float)
    e = np.asarray(events, dtype=bool)
    z = float(norm.ppf(0.5 + confidence / 2))
    out = {"time": [0.0], "survival": [1.0], "lower": [1.0], "upper": [1.0], "at_risk": [int(len(t))], "events": [0]}
    s, greenwood = 1.0, 0.0
    for u in np.unique(t[e]):
        n = int(np.sum(t >= u))
        d = int(np.sum((t == u) & e))
        s *= 1.0 - d / n
        if n == d:  # everyone left failed: S = 0 from here on
            s, lo, hi = 0.0, 0.0, 0.0
        else:
            greenwood += d / (n * (n - d))
            log_s = math.log(s)
            se = math.sqrt(greenwood) / abs(log_s)
            lo = s ** math.exp(z * se)
            hi = s ** math.exp(-z * se)
        out["time"].append(float(u))
        out["survival"].append(float(s))
        out["lower"].append(float(lo))
        out["upper"].append(float(hi))
        out["at_risk"].append(n)
        out["events"].append(d)
    return out


def _crossing(time: Sequence[float], curve: Sequence[float], level: float = 0.5) -> Optional[float]:
    """First time a right-continuous step curve is at or below ``level``."""
    for u, s in zip(time, curve):
        if s <= level + 1e-12:
            return float(u)
    return None


def exponential_mttf(total_time: float, failures: int, confidence: float = 0.95) -> Dict[str, Optional[float]]:
    """Mean time to failure ``T/d`` for a constant rate, with the exact chi-square
    interval (time-censored data: ``2T/chi2(1-a/2; 2d+2) <= MTTF <= 2T/chi2(a/2; 2d)``)."""
    from scipy.stats import chi2

    alpha = 1.0 - confidence
    if total_time <= 0:
        return {"estimate": None, "lower": None, "upper": None}
    lower = 2 * total_time / float(chi2.ppf(1 - alpha / 2, 2 * failures + 2))
    if failures == 0:
        return {"estimate": None, "lower": lower, "upper": None}
    return {
        "estimate": total_time / failures,
        "lower": lower,
        "upper": 2 * total_time / float(chi2.ppf(alpha / 2, 2 * failures)),
    }


def logrank(times_a, events_a, times_b, events_b) -> Dict[str, Optional[float]]:
    """Two-sample log-rank test: chi-square (1 dof) and two-sided p-value."""
    from scipy.stats import chi2

    ta, ea = np.asarray(times_a, float), np.asarray(events_a, bool)
    tb, eb = np.asarray(times_b, float), np.asarray(events_b, bool)
    event_times = np.unique(np.concatenate([ta[ea], tb[eb]]))
    if len(event_times) == 0:
        return {"chi2": 0.0, "p_value": 1.0}
    o_minus_e, var = 0.0, 0.0
    for u in event_times:
        na, nb = np.sum(ta >= u), np.sum(tb >= u)
        da, db = np.sum((ta == u) & ea), np.sum((tb == u) & eb)
        n, d = na + nb, da + db
        if n < 2:
            continue
        o_minus_e += da - d * na / n
        var += d * (na / n) * (nb / n) * (n - d) / (n - 1)
    if var <= 0:
        return {"chi2": 0.0, "p_value": 1.0}
    stat = o_minus_e ** 2 / var
    return {"chi2": float(stat), "p_value": float(chi2.sf(stat, 1))}


def _times_events(summaries: Sequence[Mapping[str, Any]], t_max_ps: float):
    times, events, reasons = [], [], {}
    for s in summaries:
        if s.get("failure_reason"):
            times.append(float(s["failure_time_ps"]))
            events.append(True)
            key = str(s["failure_reason"]).split(" ")[0]
            reasons[key] = reasons.get(key, 0) + 1
        else:
            times.append(float(s.get("time_ps") or t_max_ps))
            events.append(False)
    return np.asarray(times), np.asarray(events, dtype=bool), reasons


def group_statistics(summaries: Sequence[Mapping[str, Any]], t_max_ps: float, confidence: float = 0.95) -> Dict[str, Any]:
    """Statistics of one group of replicas (one variant at one temperature)."""
    times, events, reasons = _times_events(summaries, t_max_ps)
    n, d = len(times), int(events.sum())
    lo, hi = clopper_pearson(d, n, confidence)
    km = kaplan_meier(times, events, confidence)
    median = _crossing(km["time"], km["survival"])
    median_lo = _crossing(km["time"], km["lower"])
    median_hi = _crossing(km["time"], km["upper"])
    grid = np.append(np.asarray(km["time"]), t_max_ps)
    rmst = float(np.sum(np.diff(grid) * np.asarray(km["survival"]))) if t_max_ps > 0 else 0.0
    failed_times = times[events]
    return {
        "replicas": n,
        "failures": d,
        "failure_fraction": d / n if n else None,
        "failure_fraction_ci": [lo, hi],
        "median_ttf_ps": median,
        "median_ttf_ci_ps": [median_lo, median_hi],
        "mttf_ps": exponential_mttf(float(times.sum()), d, confidence),
        "rmst_ps": rmst,
        "mean_failure_time_of_failed_ps": float(failed_times.mean()) if d else None,
        "failure_reasons": reasons,
        "times_ps": times.tolist(),
        "events": events.tolist(),
        "kaplan_meier": km,
    }


def survival_statistics(summaries_by_variant: Mapping[str, Sequence[Mapping[str, Any]]], *, t_max_ps: float,
                        confidence: float = 0.95, reference: Optional[str] = None) -> Dict[str, Any]:
    """Per (variant, temperature) statistics and the comparisons against ``reference``
    (default: the first variant). Summaries need ``temperature_set_K``."""
    from scipy.stats import fisher_exact

    variants = list(summaries_by_variant)
    reference = reference or (variants[0] if variants else None)
    temperatures = sorted({float(s["temperature_set_K"]) for v in summaries_by_variant.values() for s in v})
    groups = []
    for name in variants:
        for temperature in temperatures:
            members = [s for s in summaries_by_variant[name] if float(s["temperature_set_K"]) == temperature]
            if not members:
                continue
            stats = group_statistics(members, t_max_ps, confidence)
            groups.append(dict(variant=name, temperature_K=temperature, **stats))
    comparisons = []
    by_key = {(g["variant"], g["temperature_K"]): g for g in groups}
    for temperature in temperatures:
        ref = by_key.get((reference, temperature))
        if ref is None:
            continue
        for name in variants:
            other = by_key.get((name, temperature))
            if name == reference or other is None:
                continue
            test = logrank(ref["times_ps"], ref["events"], other["times_ps"], other["events"])
            table = [[ref["failures"], ref["replicas"] - ref["failures"]],
                     [other["failures"], other["replicas"] - other["failures"]]]
            comparisons.append({
                "temperature_K": temperature,
                "reference": reference,
                "variant": name,
                "failures": [ref["failures"], other["failures"]],
                "replicas": [ref["replicas"], other["replicas"]],
                "logrank_chi2": test["chi2"],
                "logrank_p": test["p_value"],
                "fisher_p": float(fisher_exact(table)[1]),
            })
    return {
        "confidence": confidence,
        "t_max_ps": t_max_ps,
        "reference": reference,
        "temperatures_K": temperatures,
        "variants": variants,
        "groups": groups,
        "comparisons": comparisons,
    }


def statistics_table(statistics: Mapping[str, Any]) -> str:
    """One line per variant and temperature."""
    from ase_symdiag.report import format_table

    pct = int(round(100 * statistics["confidence"]))

    def interval(pair, scale=1.0):
        lo, hi = pair
        f = lambda v: "-" if v is None else f"{v * scale:.3g}"  # noqa: E731
        return f"[{f(lo)}, {f(hi)}]"

    rows = []
    for g in statistics["groups"]:
        mttf = g["mttf_ps"]
        mttf_text = (f"{mttf['estimate']:.3g} {interval((mttf['lower'], mttf['upper']))}" if mttf["estimate"] is not None
                     else (f"> {mttf['lower']:.3g}" if mttf["lower"] is not None else "-"))
        median = "-" if g["median_ttf_ps"] is None else f"{g['median_ttf_ps']:.3g}"
        rows.append([
            g["variant"], f"{g['temperature_K']:g}", f"{g['failures']}/{g['replicas']}",
            f"{g['failure_fraction']:.2f} {interval(g['failure_fraction_ci'])}",
            f"{median} {interval(g['median_ttf_ci_ps'])}", mttf_text, g["rmst_ps"],
        ])
    headers = ["variant", "T K", "failed", f"fraction [{pct}% CI]", f"median TTF ps [{pct}% CI]",
               f"MTTF ps (exp.) [{pct}% CI]", "RMST ps"]
    text = format_table(headers, rows)
    if statistics.get("comparisons"):
        crow = [[c["variant"], f"{c['temperature_K']:g}", f"{c['failures'][1]} vs {c['failures'][0]}", c["logrank_p"], c["fisher_p"]]
                for c in statistics["comparisons"]]
        text += "\n\n" + format_table([f"vs {statistics['reference']}", "T K", "failures", "log-rank p", "Fisher p"], crow)
    return text


def plot_survival(statistics: Mapping[str, Any], path: str, title: Optional[str] = None) -> None:
    """Kaplan-Meier curves, one panel per temperature, one curve and band per variant."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    temperatures = statistics["temperatures_K"]
    variants = statistics["variants"]
    fig, axes = plt.subplots(1, max(len(temperatures), 1), figsize=(4.2 * max(len(temperatures), 1), 3.6),
                             sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    t_max = statistics["t_max_ps"]
    for ax, temperature in zip(axes[0], temperatures):
        for k, name in enumerate(variants):
            group = next((g for g in statistics["groups"] if g["variant"] == name and g["temperature_K"] == temperature), None)
            if group is None:
                continue
            km = group["kaplan_meier"]
            t = np.append(km["time"], t_max)
            color = colors[k % len(colors)]
            label = f"{name} ({group['failures']}/{group['replicas']})"
            ax.step(t, np.append(km["survival"], km["survival"][-1]), where="post", color=color, label=label, lw=1.5)
            ax.fill_between(t, np.append(km["lower"], km["lower"][-1]), np.append(km["upper"], km["upper"][-1]),
                            step="post", color=color, alpha=0.15, lw=0)
        ax.set_title(f"{temperature:g} K")
        ax.set_xlabel("time, ps")
        ax.set_xlim(0, t_max)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel(f"fraction still stable ({int(round(100 * statistics['confidence']))}% band)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
