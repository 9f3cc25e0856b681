"""Does the minimum inductive bias make MD more stable? Survival of ethanol replicas.

Three PET models of ethanol trained on the same xtb data (models/ethanol-xtb-{plain,
augmented,equigrad}.pt: no augmentation, random O(3) augmentation, equigrad penalty),
each run as four variants on the batched TorchSim engine
(:func:`ase_symdiag.md.torchsim.run_md_batched`):

- ``raw``; ``corrected`` (net force and net torque removed); ``stochastic`` (one
  Haar-random O(3) operation per step and replica);
- ``symmetrized``: the quadrature :func:`ase_symdiag.md.torchsim_models.adaptive_quadrature`
  picks for that model (cheapest with leftover RMS force breaking below 1 % of the RMS
  force on ethanol and 4 rattled copies; the largest candidate, O_h, when none does).

NVT Langevin (friction 0.01/fs), 0.5 fs, ``--replicas`` replicas at each of
``--temperatures`` (hot enough that some fail), ``--steps`` steps; failure = the ASE
runner's criteria (atoms closer than 0.5 Å, forces above 50 eV/Å, non-finite
numbers). Every variant starts replica r at temperature T from the same velocities.

Output (``--out``): one directory per model and variant with the engine's files, and
``study.json`` / ``study.txt`` / ``survival-<model>.png`` / ``survival-raw.png``:
failure fractions (Clopper-Pearson 95 %), Kaplan-Meier curves (log-log 95 % band),
median and exponential-model mean time to failure, log-rank and Fisher tests of each
variant against that model's raw variant, and of the augmented and equigrad raw models
against the plain raw model.

``--symmetrized-replicas``/``--symmetrized-temperatures``: the symmetrized variants
with more than 2 operations (24-48 model evaluations per step) run fewer replicas,
at fewer temperatures (same seeds: replica r at T starts as in the other variants).

Tasks (model x variant) run in ``--jobs`` processes of one torch thread each,
most expensive first; ``--resume`` continues an interrupted study from the checkpoints.

    python bench/md_stability.py --out md-stability [--jobs 2] [--resume]
"""

import argparse
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=".*TorchScript.*")
warnings.filterwarnings("ignore", message=".*torch.jit.*")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("plain", "augmented", "equigrad")
VARIANTS = ("raw", "corrected", "stochastic", "symmetrized")


def model_path(name):
    return os.path.join(ROOT, "models", f"ethanol-xtb-{name}.pt")


def ethanol():
    from ase.build import molecule

    return molecule("CH3CH2OH")


def choose(name):
    from ase_symdiag.md.torchsim_models import adaptive_quadrature
    from ase_symdiag.backends.metatomic.model import ModelHandle

    choice = adaptive_quadrature(ModelHandle.load(model_path(name)), ethanol())
    return {"quadrature": choice.quadrature.name, "operations": choice.quadrature.size, "reason": choice.reason,
            "candidates": choice.candidates}


def run_task(task):
    """One model x variant; returns its per-replica summaries and timing."""
    import torch

    torch.set_num_threads(1)
    from ase_symdiag.md.torchsim import run_md_batched

    model, variant, args, quadrature = task
    out = os.path.join(args["out"], model, variant)
    resume = bool(args["resume"]) and os.path.exists(os.path.join(out, f"{variant}.state.json"))
    if variant == "symmetrized" and quadrature == "none":
        return {"model": model, "variant": variant, "skipped": "adaptive choice is no averaging (= raw)"}
    symmetrize = "adaptive"  # the same choice as `quadratures` (deterministic), recorded in the description
    start = time.perf_counter()
    expensive = variant == "symmetrized" and args["symmetrized_replicas"] is not None
    replicas = args["symmetrized_replicas"] if expensive else args["replicas"]
    temperatures = args["symmetrized_temperatures"] if expensive else args["temperatures"]
    result = run_md_batched(
        model_path(model), ethanol(), [variant], replicas=replicas, temperatures=temperatures,
        ensemble="nvt", thermostat="langevin", friction=0.01, steps=args["steps"], timestep=args["timestep"],
        interval=args["interval"], checkpoint_every=args["checkpoint_every"], symmetrize=symmetrize,
        seed=args["seed"], out=out, resume=resume, plot=False,
    )
    v = result.variants[variant]
    return {
        "model": model, "variant": variant, "description": v.description, "wall_s": time.perf_counter() - start,
        "engine_wall_s": v.wall_s, "replica_steps": v.atom_steps // len(ethanol()),
        "summaries": [rep["summary"] for rep in v.replicas],
    }


COST = {"raw": 1, "corrected": 1, "stochastic": 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--temperatures", default="3000,6000")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--timestep", type=float, default=0.5)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--symmetrized-replicas", type=int, default=None,
                        help="fewer replicas for symmetrized variants with more than 2 operations (cost)")
    parser.add_argument("--symmetrized-temperatures", default=None,
                        help="temperatures of those (default --temperatures)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    settings = dict(replicas=args.replicas, temperatures=[float(t) for t in args.temperatures.split(",")],
                    steps=args.steps, timestep=args.timestep, interval=args.interval,
                    checkpoint_every=args.checkpoint_every, seed=args.seed, out=args.out, resume=args.resume,
                    symmetrized_replicas=args.symmetrized_replicas,
                    symmetrized_temperatures=[float(t) for t in (args.symmetrized_temperatures or args.temperatures).split(",")])
    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]

    import torch

    torch.set_num_threads(1)
    quadratures = {m: choose(m) for m in models} if "symmetrized" in variants else {}
    for m, q in quadratures.items():
        print(f"{m}: symmetrized over {q['quadrature']} ({q['operations']} operations): {q['reason']}", flush=True)
    tasks = []
    cheap = dict(settings, symmetrized_replicas=None)
    for m in models:
        for v in variants:
            quadrature = quadratures[m]["quadrature"] if v == "symmetrized" else None
            task_settings = settings if v == "symmetrized" and quadratures[m]["operations"] > 2 else cheap
            cost = quadratures[m]["operations"] * 2 if v == "symmetrized" else COST[v]
            tasks.append((cost, (m, v, task_settings, quadrature)))
    tasks = [t for _, t in sorted(tasks, key=lambda item: -item[0])]

    results = []
    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_task, t) for t in tasks]
            for future in as_completed(futures):
                r = future.result()
                results.append(r)
                print(f"done {r['model']}/{r['variant']} ({r.get('wall_s', 0):.0f} s)", flush=True)
    else:
        for t in tasks:
            r = run_task(t)
            results.append(r)
            print(f"done {r['model']}/{r['variant']} ({r.get('wall_s', 0):.0f} s)", flush=True)
    report(results, settings, quadratures, args.out, time.perf_counter() - started)
    return 0


def report(results, settings, quadratures, out, wall):
    from ase_symdiag.md.statistics import plot_survival, statistics_table, survival_statistics
    from ase_symdiag.report import write_json

    t_max = settings["steps"] * settings["timestep"] / 1000.0
    done = {(r["model"], r["variant"]): r for r in results if "summaries" in r}
    models = [m for m in MODELS if any(k[0] == m for k in done)]
    per_model = {}
    text = []
    for m in models:
        groups = {v: done[(m, v)]["summaries"] for v in VARIANTS if (m, v) in done}
        stats = survival_statistics(groups, t_max_ps=t_max, reference="raw" if "raw" in groups else None)
        per_model[m] = stats
        plot_survival(stats, os.path.join(out, f"survival-{m}.png"), title=f"ethanol-xtb-{m}")
        text.append(f"== ethanol-xtb-{m} ==\n" + statistics_table(stats))
    cross = {m: done[(m, "raw")]["summaries"] for m in models if (m, "raw") in done}
    cross_stats = None
    if cross:
        cross_stats = survival_statistics(cross, t_max_ps=t_max, reference="plain" if "plain" in cross else None)
        plot_survival(cross_stats, os.path.join(out, "survival-raw.png"), title="raw models")
        text.append("== raw models against each other ==\n" + statistics_table(cross_stats))
    # every variant of every model, pooled over temperatures, for the headline table
    pooled = {f"{m}/{v}": [dict(s, temperature_set_K=0.0) for s in done[(m, v)]["summaries"]] for (m, v) in done}
    pooled_stats = survival_statistics(pooled, t_max_ps=t_max, reference="plain/raw" if "plain/raw" in pooled else None)
    text.append("== all temperatures pooled ==\n" + statistics_table(pooled_stats))
    timing = {f"{r['model']}/{r['variant']}": {k: r.get(k) for k in ("description", "wall_s", "engine_wall_s", "replica_steps", "skipped")}
              for r in results}
    text.append(f"wall time {wall:.0f} s; load average {os.getloadavg()}")
    data = {"settings": settings, "quadratures": quadratures, "per_model": per_model, "raw_models": cross_stats,
            "pooled": pooled_stats, "timing": timing, "wall_s": wall, "loadavg": os.getloadavg()}
    write_json(os.path.join(out, "study.json"), data)
    with open(os.path.join(out, "study.txt"), "w") as handle:
        handle.write("\n\n".join(text) + "\n")
    print("\n\n".join(text))
    for key, t in timing.items():
        print(key, json.dumps(t))


if __name__ == "__main__":
    sys.exit(main())
