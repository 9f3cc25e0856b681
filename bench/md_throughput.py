"""Throughput of the MD engines: atom-steps per second, ASE loop vs batched TorchSim.

Two systems, both with shipped PET models: an ethanol molecule (9 atoms,
models/ethanol-xtb-plain.pt) and a 108-atom Cu crystal (3x3x3 cubic fcc,
models/cu-emt-plain.pt). For each, in ONE process (same machine state):

- ASE engine (:func:`ase_symdiag.md.run_md`, raw variant, NVT Langevin): one replica
  at a time, so N replicas cost N runs (measured for one replica);
- TorchSim engine (:func:`ase_symdiag.md.torchsim.run_md_batched`, raw variant, NVT
  Langevin): all N replicas in one batch, N from ``--counts``, through
  ``batched`` (:class:`ase_symdiag.backends.metatomic.torchsim_model.BatchedMetatomicModel`,
  what ``md --engine torchsim`` runs) and ``metatomic-torchsim``
  (``metatomic_torchsim.MetatomicModel``, one System, strain and neighbour list per
  system, the whole batch in one model call);

with ``--families``, the same TorchSim runs of Cu108 through torch-sim's MACE wrapper
(a small random ScaleShiftMACE, float64) and our Orb adapter
(:class:`ase_symdiag.backends.orb.OrbModel`, random orb-v3 direct, small sizes;
``--orb-full``: the real architecture), against one replica of the same model; with
``--variants``, for ethanol at N = 16, the per-step cost of each variant (raw,
stochastic, corrected, corrected through the export_corrected TorchScript model,
symmetrized at ``"D2"``, which is D2h with 8 operations) and, at the largest N, TorchScript's unoptimized
execution (``deterministic=True``).

Both engines record every 10 steps (observables on the host, as users run them).
Time per step: steady state, from the end of step 1 to the end of step N (no model
loading, TorchScript warm-up or export). The machine may be shared: every
configuration runs ``--repeat`` times, in turn with the others, and the best (least
disturbed) time is kept. Threads: ``--threads`` (default 1).

    OMP_NUM_THREADS=1 python bench/md_throughput.py --systems cu --counts 1,8,64 --repeat 2 \\
        [--families] [--variants] [--json docs/benchmarks/md-throughput-cpu.json]

Run it from any directory: it imports the ase_symdiag of this checkout.
"""

import argparse
import os
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore", message=".*TorchScript.*")
warnings.filterwarnings("ignore", message=".*torch.jit.*")

import torch  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402

from ase_symdiag.md import run_md  # noqa: E402
from ase_symdiag.md.torchsim import run_md_batched  # noqa: E402
from ase_symdiag.report import format_table, write_json  # noqa: E402

SYSTEMS = {"ethanol": "ethanol (9 atoms)", "cu": "Cu fcc (108 atoms)"}
ENGINES = ("batched", "metatomic-torchsim")


def systems():
    ethanol = molecule("CH3CH2OH")
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    crystal.rattle(0.02, seed=1)
    return {
        "ethanol": (ethanol, os.path.join(ROOT, "models", "ethanol-xtb-plain.pt"), 0.5),
        "cu": (crystal, os.path.join(ROOT, "models", "cu-emt-plain.pt"), 2.0),
    }


COMMON = dict(ensemble="nvt", interval=10, plot=False)


class Clock:
    """callback(name, step, ...): time of each step; steady state = steps 2..N."""

    def __init__(self):
        self.times = []

    def __call__(self, name, step, state):
        self.times.append(time.perf_counter())

    def seconds_per_step(self):
        return (self.times[-1] - self.times[1]) / (len(self.times) - 2)


def ase_seconds_per_step(model, atoms, steps, timestep):
    clock = Clock()
    run_md(model, atoms, ["raw"], steps=steps, timestep=timestep, temperature=300.0, callback=clock, **COMMON)
    return clock.seconds_per_step()


def torchsim_seconds_per_step(model, atoms, n, steps, timestep, variant="raw", **extra):
    """``variant``: a variant name of ``model`` or a ready TorchSim model."""
    clock = Clock()
    run_md_batched(model, atoms, {"raw": variant}, replicas=n, temperatures=[300.0], steps=steps, timestep=timestep,
                   symmetrize="D2", callback=clock, **COMMON, **extra)
    return clock.seconds_per_step()


def engine_model(engine: str, model: str, atoms):
    """What the TorchSim engine runs for ``engine``: the variant name ``raw`` (which
    ``build_variant`` turns into BatchedMetatomicModel) or metatomic-torchsim's model."""
    if engine == "batched":
        return "raw"
    from metatomic_torchsim import MetatomicModel

    return MetatomicModel(model, device="cpu", compute_stress=bool(atoms.pbc.all()), neighbor_skin=0.0,
                          uncertainty_threshold=None)


def steps_for(n_atoms: int, steps: int) -> int:
    return steps if n_atoms < 2000 else max(steps // 2, 6)


def best_of(repeat: int, jobs: dict) -> dict:
    """``{key: best seconds}`` of the callables in ``jobs``, run in turn ``repeat`` times."""
    best = {key: float("inf") for key in jobs}
    for _ in range(repeat):
        for key, job in jobs.items():
            best[key] = min(best[key], job())
            print(f"  {key}: {best[key] * 1000:.0f} ms/step (best so far)", file=sys.stderr, flush=True)
    return best


def engine_rows(args, data) -> list:
    rows = []
    for key in args.systems:
        atoms, model, timestep = systems()[key]
        label, n_atoms = SYSTEMS[key], len(atoms)
        jobs = {("ase", 1): lambda: ase_seconds_per_step(model, atoms, args.steps, timestep)}
        for n in args.counts:
            for engine in args.engines:
                jobs[(engine, n)] = (lambda engine=engine, n=n: torchsim_seconds_per_step(
                    model, atoms, n, steps_for(n * n_atoms, args.steps), timestep,
                    variant=engine_model(engine, model, atoms)))
        best = best_of(args.repeat, jobs)
        base = n_atoms / best[("ase", 1)]
        for (engine, n), seconds in best.items():
            rate = n * n_atoms / seconds
            data["rows"].append({"system": label, "engine": engine, "replicas": n, "seconds_per_step": seconds,
                                 "atom_steps_per_s": rate, "vs_ase": rate / base})
            rows.append([label, engine, n, seconds * 1000, rate, rate / base])
    return rows


def family_models(orb_full: bool) -> dict:
    """``{name: TorchSim model}``: torch-sim's MACE wrapper and our Orb adapter, random weights."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from family_models import ORB_SIZES, small_mace

    from ase_symdiag.backends.orb import OrbModel, build_architecture

    torch.manual_seed(0)
    sizes = {} if orb_full else ORB_SIZES
    orb = build_architecture("orb-v3-direct", **sizes).double().eval()
    name = "Orb-v3 direct (" + ("full size" if orb_full else "small") + ", random, OrbModel)"
    return {"MACE (small, random, torch-sim MaceModel)": small_mace(), name: OrbModel(orb, dtype=torch.float64)}


def family_rows(args, data) -> list:
    atoms, _, timestep = systems()["cu"]
    n_atoms = len(atoms)
    rows = []
    from ase_symdiag.md.torchsim_models import ChunkedModel

    models = {}
    for name, model in family_models(args.orb_full).items():
        models[f"{name}, one call"] = model
        models[f"{name}, <= 512 atoms a call (ChunkedModel, the md default)"] = ChunkedModel(model)
    for name, model in models.items():
        jobs = {n: (lambda n=n, model=model: torchsim_seconds_per_step(
            model, atoms, n, steps_for(n * n_atoms, args.steps), timestep, variant=model)) for n in args.counts}
        best = best_of(args.repeat, jobs)
        base = n_atoms / best[min(best)]
        for n, seconds in best.items():
            rate = n * n_atoms / seconds
            data["families"].append({"model": name, "replicas": n, "seconds_per_step": seconds,
                                     "atom_steps_per_s": rate, "vs_one_replica": rate / base})
            rows.append([name, n, seconds * 1000, rate, rate / base])
    return rows


def variant_rows(args, data) -> list:
    from ase_symdiag.md.torchsim_models import build_variant

    atoms, model, timestep = systems()["ethanol"]
    rows = []
    for variant in ("raw", "stochastic", "corrected", "corrected (export)", "symmetrized"):
        spec = variant
        if variant == "corrected (export)":
            spec = build_variant("corrected", model, atoms, corrected_export=True)[0]
        seconds = torchsim_seconds_per_step(model, atoms, 16, args.steps, timestep, variant=spec)
        data["variants"].append({"variant": variant, "replicas": 16, "seconds_per_step": seconds})
        rows.append([variant, 16, seconds * 1000, seconds / 16 * 1000])
    n = max(args.counts)
    for deterministic in (False, True):
        seconds = torchsim_seconds_per_step(model, atoms, n, args.steps, timestep, deterministic=deterministic)
        name = "raw, unoptimized TorchScript" if deterministic else "raw, optimized TorchScript (default)"
        data["variants"].append({"variant": name, "replicas": n, "seconds_per_step": seconds})
        rows.append([name, n, seconds * 1000, seconds / n * 1000])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="ethanol,cu", help="comma-separated: ethanol, cu")
    parser.add_argument("--counts", default="1,2,4,8,16,32,64", help="replica counts of the TorchSim runs")
    parser.add_argument("--engines", default=",".join(ENGINES), help="TorchSim models: batched, metatomic-torchsim")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration; the best is kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", action="store_true", help="also MACE (torch-sim) and Orb (OrbModel) on Cu108")
    parser.add_argument("--orb-full", action="store_true", help="the full-size orb-v3 direct architecture")
    parser.add_argument("--variants", action="store_true", help="also the per-variant costs on ethanol")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    args.counts = [int(n) for n in args.counts.split(",") if n]
    args.engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(args.systems) - set(SYSTEMS)) + sorted(set(args.engines) - set(ENGINES))
    if unknown or args.steps < 3 or args.repeat < 1 or not args.counts or min(args.counts) < 1:
        parser.error(f"bad arguments (unknown: {unknown}; steps >= 3, repeat >= 1, counts >= 1)")
    torch.set_num_threads(args.threads)
    data = {"threads": args.threads, "steps": args.steps, "repeat": args.repeat, "torch": torch.__version__,
            "rows": [], "families": [], "variants": []}
    print(format_table(["system", "engine", "replicas", "ms/step", "atom-steps/s", "vs ASE (1 replica)"],
                       engine_rows(args, data)))
    if args.families:
        print()
        print("Cu fcc (108 atoms), TorchSim engine, other model families")
        print(format_table(["model", "replicas", "ms/step", "atom-steps/s", "vs 1 replica"], family_rows(args, data)))
    if args.variants:
        print()
        print("ethanol, TorchSim, per variant (symmetrized: D2h, 8 operations)")
        print(format_table(["variant", "replicas", "ms/step", "ms/replica-step"], variant_rows(args, data)))
    if args.json:
        write_json(args.json, data)
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
