"""The measured section of docs/pet_study.md, written from the stage files of
``bench/pet_study.py`` (tables, and plots beside the page under ``pet_study/``).

The section sits between the two marker lines below; the rest of the page is text
written by people and is left as it is.
"""

import json
import os
import sys
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "pet_study.md")
#: the page's numbers: the stage files of the study, committed
DATA_DIR = os.path.join(ROOT, "docs", "benchmarks", "pet_study")
PLOTS = "pet_study"  # plots folder, next to the page
REGENERATE = "python bench/pet_study.py --out /tmp/pet-study --jobs 2 --doc"

BEGIN = "<!-- bench/pet_study.py: begin measured section -->"
END = "<!-- bench/pet_study.py: end measured section -->"
STAGES = ("train", "history", "errors", "spectrum", "layers", "llpr", "md")
OPTIONAL = ("md_hot",)  # stages only some data sets have
#: the first word of an MD failure reason (ase_symdiag.md.observables.failure_reason), in words
REASONS = {"atoms": "collapsed (atoms < 0.5 Å)", "force": "force > 50 eV/Å", "non-finite": "non-finite",
           "total": "energy jump"}
CHANNELS = ("1+", "1-", "2+", "2-", "3+", "3-", "0-")


def load(out: str, data: str, variant: str) -> Dict[str, dict]:
    """Every stage file of one run (a missing one is an error naming it)."""
    folder = os.path.join(out, f"{data}-{variant}")
    result = {}
    for name in STAGES:
        path = os.path.join(folder, f"{name}.json")
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: run bench/pet_study.py --out {out} first")
        with open(path) as handle:
            result[name] = json.load(handle)
    for name in OPTIONAL:
        path = os.path.join(folder, f"{name}.json")
        if os.path.exists(path):
            with open(path) as handle:
                result[name] = json.load(handle)
    return result


def g(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def table(headers: Sequence[str], rows: List[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def short(layer: str) -> str:
    return layer.replace("mtt::feature::", "")


def setup_section(runs, invocations: List[dict]) -> str:
    rows = []
    for data, by_variant in runs.items():
        first = next(iter(by_variant.values()))
        train = first["train"]
        architecture = train["options"]["architecture"]
        hypers = architecture["training"]
        n_test = first["errors"]["structures"]
        minutes = " / ".join(f"{v}: {r['train']['wall_s'] / 60:.1f}" for v, r in by_variant.items())
        rows.append([data, f"{train['n_train']} / {train['n_validation']} / {n_test}", g(architecture["model"]["cutoff"]),
                     hypers["num_epochs"], hypers["checkpoint_interval"], hypers["batch_size"],
                     g(hypers["learning_rate"]), minutes])
    totals = []
    for data, by_variant in runs.items():
        for variant, r in by_variant.items():
            names = [name for name in STAGES + OPTIONAL if name in r]
            parts = ", ".join(f"{name} {r[name]['wall_s'] / 60:.1f}" for name in names)
            totals.append(f"- {data} {variant}: {sum(r[n]['wall_s'] for n in names) / 60:.1f} min ({parts})")
    options = next(iter(next(iter(runs.values())).values()))["train"]["options"]
    model = ", ".join(f"{k} {v}" for k, v in options["architecture"]["model"].items() if k != "cutoff")
    precision = f"float{options['base_precision']}"
    text = [
        "Regenerate (trains, measures, copies the stage files to `docs/benchmarks/pet_study/` and rewrites "
        "this section and its plots; stage files already in the study folder are reused):",
        "",
        "```",
        REGENERATE,
        "```",
        "",
        "From the committed stage files alone: `python bench/pet_study_page.py` (`--check`: compare, as the "
        "test suite does).",
        "",
        f"Model: metatrain PET, {model}, {precision}, seed {options['seed']}, metatrain's defaults otherwise "
        "(Adam, warm-up then cosine decay to 0, loss MSE on energy, forces and, for Cu, the virial).",
        "",
        table(["data set", "train / validation / test", "cutoff Å", "epochs", "checkpoint every", "batch",
               "learning rate", "training minutes"], rows),
        "",
        "Minutes per stage, each run on one thread, two runs at a time on the 2-core machine:",
        "",
        *totals,
    ]
    if invocations:
        total = sum(i["wall_s"] for i in invocations)
        interrupted = sum(not i.get("finished", True) for i in invocations)
        text += ["", f"Wall time of the study: {total / 60:.0f} min in {len(invocations)} command(s), "
                 f"{interrupted} of them interrupted (`invocations.json`; a resumed command reuses the stages "
                 "already on disk)."]
    quadratures = sorted({r["md"]["settings"]["symmetrize"] for by_variant in runs.values() for r in by_variant.values()})
    text += ["", f"MD: `ase-symdiag md --engine torchsim`, symmetrized variant over `{', '.join(quadratures)}`."]
    return "\n".join(text)


def errors_section(runs) -> str:
    rows = []
    for data, by_variant in runs.items():
        for variant, r in by_variant.items():
            e = r["errors"]
            last = r["train"]["epochs"][-1]
            rows.append([data, variant, g(e["energy_rmse_meV_per_atom"]), g(e["force_rmse_meV_per_A"]),
                         g(e["stress_rmse_GPa"]), g(last.get("validation forces RMSE (meV/A)"))])
    return table(["data set", "variant", "energy RMSE meV/atom", "force RMSE meV/Å", "stress RMSE GPa",
                  "last-epoch validation force RMSE meV/Å"], rows)


def history_plot(data: str, by_variant, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"plain": "-", "augmented": "--"}
    colours = {}
    for variant, r in by_variant.items():
        for layer, points in r["history"]["layers"].items():
            colour = colours.setdefault(layer, f"C{len(colours)}")
            epochs, fractions = zip(*points)
            left.semilogy(epochs, [max(1 - f, 1e-12) for f in fractions], styles.get(variant, ":"), color=colour,
                          label=short(layer) if variant == "plain" else None)
        epochs = [row["epoch"] for row in r["history"]["outputs"]]
        right.semilogy(epochs, [1000 * row["force_rms_per_component_eV_per_A"] for row in r["history"]["outputs"]],
                       styles.get(variant, ":"), color="k", label=f"force breaking RMS ({variant})")
        log = r["train"]["epochs"]
        right.semilogy([row["Epoch"] for row in log], [row["validation forces RMSE (meV/A)"] for row in log],
                       styles.get(variant, ":"), color="C3", label=f"validation force RMSE ({variant})")
    left.set(xlabel="epoch", ylabel="1 - invariant fraction", title=f"{data}: layers (solid plain, dashed augmented)")
    left.legend(fontsize=7)
    right.set(xlabel="epoch", ylabel="meV/Å", title=f"{data}: outputs")
    right.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def history_section(runs, plots: Optional[str]) -> str:
    text = []
    for data, by_variant in runs.items():
        name = f"{data}-history.png"
        if plots is not None:
            history_plot(data, by_variant, os.path.join(plots, name))
        first = next(iter(by_variant.values()))["history"]
        text += [f"**{data}** ({first['n_structures']} test structures, lmax {first['lmax']}; "
                 f"output breaking over {first['n_rotations']} seeded operations):", "",
                 f"![{data} history]({PLOTS}/{name})", ""]
        headers, rows = ["layer: 1 - invariant"], {}
        for variant, r in by_variant.items():
            layers = r["history"]["layers"]
            epochs = [p[0] for p in next(iter(layers.values()))]
            headers += [f"{variant} epoch {epochs[0]}", f"{variant} epoch {epochs[-1]}"]
            for layer, points in layers.items():
                rows.setdefault(short(layer), []).extend([g(1 - points[0][1]), g(1 - points[-1][1])])
        out_rows = []
        for variant, r in by_variant.items():
            out = r["history"]["outputs"]
            for key, label in (("force_rms_per_component_eV_per_A", "forces: breaking RMS meV/Å"),
                               ("energy_max_meV_per_atom", "energy: worst breaking meV/atom")):
                scale = 1000 if key.startswith("force") else 1
                out_rows.append((label, variant, out[0][key] * scale, out[-1][key] * scale))
        for label in dict.fromkeys(row[0] for row in out_rows):
            rows[label] = [g(v) for row in out_rows if row[0] == label for v in row[2:]]
        text += [table(headers, [[k] + v for k, v in rows.items()]), ""]
    return "\n".join(text)


def spectrum_section(runs) -> str:
    rows = []
    for data, by_variant in runs.items():
        for variant, r in by_variant.items():
            spectra = r["spectrum"]["spectra"]
            for output in spectra[0]["outputs"]:
                items = [s["outputs"][output] for s in spectra]
                variance = sum(o["variance"] for o in items)
                rms = (sum(o["rms_breaking"] ** 2 for o in items) / len(items)) ** 0.5
                shares = [g(sum(o["power"].get(c, 0.0) for o in items) / variance, 2) if variance > 0 else "-"
                          for c in CHANNELS]
                unresolved = g(sum(o["unresolved"] for o in items) / variance, 2) if variance > 0 else "-"
                rows.append([data, variant, output, g(rms)] + shares
                            + [unresolved])
    quadrature = next(iter(next(iter(runs.values())).values()))["spectrum"]["spectra"][0]["quadrature"]
    return ("Share of each output's rotational variance (summed over the structures) per O(3) channel "
            f"(lambda, parity), lmax 3 over `{quadrature}`; `unresolved`: the part above lmax; `rms breaking`: "
            "RMS amplitude per component (eV, eV/Å, eV/Å^3):\n\n"
            + table(["data set", "variant", "output", "rms breaking"] + list(CHANNELS) + ["unresolved"], rows))


def layers_section(runs) -> str:
    rows = []
    for data, by_variant in runs.items():
        for variant, r in by_variant.items():
            report = next(v for k, v in r["layers"].items() if k != "wall_s")
            for layer in report["layers"]:
                f = layer["fractions"]
                rows.append([data, variant, short(layer["layer"]), g(layer["one_minus_invariant"])]
                            + [g(f.get(c)) for c in ("1-", "1+", "2+", "2-", "0-")] + [g(layer["unresolved_fraction"])])
    return ("Final models (`representations model.ckpt`, the best validation epoch), fraction of each layer's "
            "mean square per channel:\n\n"
            + table(["data set", "variant", "layer", "1 - invariant", "1-", "1+", "2+", "2-", "0-", ">2"], rows))


def quality_rows(label: Sequence[str], report: dict) -> List[list]:
    rows = []
    for q in report["qualities"]:
        cov = q["coverage"]
        rows.append(list(label) + [q["quantity"], q["n"], g(q["spearman"], 2), g(q["spearman_magnitude_baseline"], 2),
                                   f"{cov['1']:.2f} / {cov['2']:.2f} / {cov['3']:.2f}", g(q["error_rms"]),
                                   g(q["spread_rms"])])
    return rows


QUALITY_HEADERS = ["spread vs error", "n", "Spearman", "Spearman of \\|F\\|", "within 1 / 2 / 3 std", "error RMS",
                   "spread RMS"]


def calibration_plot(runs, path: str) -> None:
    """Observed against nominal coverage, one panel per data set, a curve per model and quantity."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.4), squeeze=False)
    for ax, (data, by_variant) in zip(axes[0], runs.items()):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1)
        for i, (variant, r) in enumerate(by_variant.items()):
            for j, q in enumerate(r["llpr"]["qualities"]):
                curve = q["calibration"]
                ax.plot(curve["nominal"], curve["observed"], ["-", "--", ":", "-."][j % 4], color=f"C{i}",
                        label=f"{variant}: {q['quantity']}")
        ax.set(xlabel="nominal fraction (Gaussian, the uncertainty as std)", ylabel="observed fraction", title=data)
        ax.legend(fontsize=6)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def uncertainty_section(runs, shipped: Optional[dict], plots: Optional[str]) -> str:
    rows = []
    for data, by_variant in runs.items():
        for variant, r in by_variant.items():
            rows += quality_rows([data, variant], r["llpr"])
    if plots is not None:
        calibration_plot(runs, os.path.join(plots, "calibration.png"))
    text = ("The study's models, each wrapped by metatrain's `llpr` (last-layer covariance and its calibration on "
            "the run's training file): the rotational spread over `lebedev:2` and LLPR's `energy_uncertainty` "
            "against the error of the unrotated prediction on the held-out test set (energies meV/atom, forces "
            "meV/Å; `Spearman of |F|`: the force magnitude as a baseline ranking):\n\n"
            + table(["data set", "model"] + QUALITY_HEADERS, rows)
            + f"\n\n![calibration]({PLOTS}/calibration.png)")
    if shipped:
        rows = []
        for name, report in shipped["models"].items():
            rows += quality_rows([name], report)
        text += ("\n\nThe same measurement on the shipped reference PETs (ase-symdiag's own PET, "
                 "`bench/rotational_uncertainty.py`), each on the held-out split of its training config:\n\n"
                 + table(["model"] + QUALITY_HEADERS, rows))
    return text


def md_rows(data: str, variant: str, md: dict) -> List[list]:
    """One row per MD variant and temperature of one ``md`` stage file."""
    rows = []
    for group in md["statistics"]["groups"]:
        run = md["variants"][group["variant"]]
        summaries = [rep["summary"] for rep in run["replicas"] if rep["temperature_K"] == group["temperature_K"]]
        reasons = ", ".join(f"{v} {REASONS.get(k, k)}" for k, v in group["failure_reasons"].items()) or "-"
        rows.append([
            data, variant, group["variant"], f"{group['temperature_K']:g}", f"{group['failures']}/{group['replicas']}",
            g(group["median_ttf_ps"]), reasons, f"{sum(s['temperature_mean_K'] for s in summaries) / len(summaries):.0f}",
            g(min(s["min_distance_A"] for s in summaries)), g(max(s["max_force_eV_A"] for s in summaries)),
            g(1000 * run["wall_s"] / run["atom_steps"]),
        ])
    return rows


def md_section(runs) -> str:
    rows, tests, settings = [], [], {}
    for data, by_variant in runs.items():
        for variant, r in by_variant.items():
            for key in ("md",) + OPTIONAL:
                if key in r:
                    rows += md_rows(data, variant, r[key])
                    tests += [[data, variant, c["variant"], f"{c['temperature_K']:g}",
                               f"{c['failures'][1]} vs {c['failures'][0]}", g(c["logrank_p"], 2), g(c["fisher_p"], 2)]
                              for c in r[key]["statistics"].get("comparisons", []) if sum(c["failures"])]
                    md = r[key]["settings"]
                    temperatures = ", ".join(f"{t:g}" for t in md["temperatures"])
                    settings[(data, key)] = (f"{data} at {temperatures} K: {md['replicas']} replicas per temperature, "
                                             f"{md['steps']} steps of {md['timestep']:g} fs")
    ensembles = sorted({f"{r[k]['settings']['ensemble'].upper()} ({r[k]['settings']['thermostat_kind']})"
                        for by_variant in runs.values() for r in by_variant.values() for k in ("md",) + OPTIONAL if k in r})
    return (f"{', '.join(ensembles)}; replicas start from the first test structure with seeded Maxwell-Boltzmann "
            "velocities, the same for every variant (" + "; ".join(settings.values()) + "). A replica fails when two "
            "atoms come closer than 0.5 Å or a force exceeds 50 eV/Å. Mean temperature over the replicas, smallest "
            "distance and largest force over them, and the cost of the variant (wall ms per atom-step, the whole "
            "batch on one thread):\n\n"
            + table(["data set", "model", "variant", "T K", "failed", "median TTF ps", "reasons", "mean T K",
                     "min distance Å", "max force eV/Å", "ms per atom-step"], rows)
            + ("\n\nAgainst the raw model, where anything failed (two-sided p):\n\n"
               + table(["data set", "model", "variant vs raw", "T K", "failures", "log-rank p", "Fisher p"], tests)
               if tests else ""))


def archive(out: str, data: str = DATA_DIR) -> None:
    """Copy the stage files of the study in ``out`` (and its invocation log and the
    shipped models' uncertainty) into ``data``, the page's committed numbers."""
    import shutil

    for run in sorted(os.listdir(out)):
        if os.path.isdir(os.path.join(out, run)) and os.path.exists(os.path.join(out, run, "train.json")):
            os.makedirs(os.path.join(data, run), exist_ok=True)
            for name in STAGES + OPTIONAL:
                source = os.path.join(out, run, f"{name}.json")
                if os.path.exists(source):
                    shutil.copyfile(source, os.path.join(data, run, f"{name}.json"))
    for name in ("shipped-uncertainty.json", "invocations.json"):
        if os.path.exists(os.path.join(out, name)):
            shutil.copyfile(os.path.join(out, name), os.path.join(data, name))


def render(data: str, plots: Optional[str]) -> str:
    """The measured section from the stage files in ``data``; plots drawn into the
    folder ``plots`` (None: text only)."""
    from pet_study import DATA, VARIANTS

    runs = {d: {v: load(data, d, v) for v in VARIANTS if os.path.isdir(os.path.join(data, f"{d}-{v}"))} for d in DATA}
    runs = {d: by_variant for d, by_variant in runs.items() if by_variant}
    if not runs:
        raise SystemExit(f"{data} holds no study run: run bench/pet_study.py first")
    shipped = None
    if os.path.exists(os.path.join(data, "shipped-uncertainty.json")):
        with open(os.path.join(data, "shipped-uncertainty.json")) as handle:
            shipped = json.load(handle)
    invocations = []
    if os.path.exists(os.path.join(data, "invocations.json")):
        with open(os.path.join(data, "invocations.json")) as handle:
            invocations = json.load(handle)
    if plots is not None:
        os.makedirs(plots, exist_ok=True)
    return "\n\n".join([
        "### Setup\n\n" + setup_section(runs, invocations),
        "### Test errors\n\n" + errors_section(runs),
        "### Symmetry per layer through training\n\n" + history_section(runs, plots),
        "### Spectrum of the final models' breaking\n\n" + spectrum_section(runs),
        "### Layers of the final models\n\n" + layers_section(runs),
        "### Rotational spread as an uncertainty\n\n" + uncertainty_section(runs, shipped, plots),
        "### MD stability\n\n" + md_section(runs),
    ])


def split_page(text: str, doc: str):
    """``(head, section, tail)`` of a page around its measured section."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no measured section: add the lines {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    section, tail = rest.split(END, 1)
    return head, section.strip("\n"), tail


def write_page(doc: str = DOC, data: str = DATA_DIR) -> None:
    """Rewrite the measured section of ``doc`` and its plots from the stage files in ``data``."""
    from ase_symdiag.report import atomic_write

    with open(doc) as handle:
        head, _, tail = split_page(handle.read(), doc)
    body = render(data, os.path.join(os.path.dirname(os.path.abspath(doc)), PLOTS))
    page = head + BEGIN + "\n" + body + "\n" + END + tail

    def writer(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(page)

    atomic_write(doc, writer)


def check_page(doc: str = DOC, data: str = DATA_DIR) -> Optional[str]:
    """None if the measured section of ``doc`` is what ``data`` renders, else the first differing line."""
    with open(doc) as handle:
        _, section, _ = split_page(handle.read(), doc)
    expected = render(data, None)
    for number, (have, want) in enumerate(zip(section.splitlines(), expected.splitlines()), 1):
        if have != want:
            return f"line {number} of the section: page has {have!r}, the data give {want!r}"
    if len(section.splitlines()) != len(expected.splitlines()):
        return f"the section has {len(section.splitlines())} lines, the data give {len(expected.splitlines())}"
    return None


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write (or --check) the measured section of docs/pet_study.md "
                                     "from the committed stage files of the study.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from its data")
    args = parser.parse_args()
    if args.check:
        problem = check_page()
        if problem:
            print(f"{DOC}: {problem}; run python bench/pet_study_page.py", file=sys.stderr)
            return 1
        return 0
    write_page()
    return 0


if __name__ == "__main__":
    sys.exit(main())
