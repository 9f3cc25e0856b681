"""Throughput of the MD engines: atom-steps per second, ASE loop vs batched TorchSim.

Two systems, both with shipped PET models: an ethanol molecule (9 atoms,
models/ethanol-xtb-plain.pt) and a 108-atom Cu crystal (3x3x3 cubic fcc,
models/cu-emt-plain.pt). For each, in ONE process (same machine state):

- ASE engine (:func:`ase_symdiag.md.run_md`, raw variant, NVT Langevin): one replica
  at a time, so N replicas cost N runs; measured for 1 and 4 replicas run back to back;
- TorchSim engine (:func:`ase_symdiag.md.torchsim.run_md_batched`, raw variant, NVT
  Langevin): all N replicas in one batch, N = 1, 2, 4, ..., 64;

plus, for ethanol at N = 16, the per-step cost of each variant (raw, stochastic,
corrected, corrected through the export_corrected TorchScript model, symmetrized over
D2h with 8 operations) and, at N = 64, TorchScript's
unoptimized execution (``deterministic=True``). Both engines record every 10 steps
(observables on the host, as users run them). Time per step: steady state, from the
end of step 1 to the end of step N (no model loading, TorchScript warm-up or export). Threads: ``--threads`` (default 1; on 2 cores
two torch threads are slower for these small kernels).

    python bench/md_throughput.py [--steps 20] [--max-replicas 64] [--json docs/benchmarks/md-throughput-cpu.json]
"""

import argparse
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=".*TorchScript.*")
warnings.filterwarnings("ignore", message=".*torch.jit.*")

import torch  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402

from ase_symdiag.md import run_md  # noqa: E402
from ase_symdiag.md.torchsim import run_md_batched  # noqa: E402
from ase_symdiag.report import format_table, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def systems():
    ethanol = molecule("CH3CH2OH")
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    crystal.rattle(0.02, seed=1)
    return {
        "ethanol (9 atoms)": (ethanol, os.path.join(ROOT, "models", "ethanol-xtb-plain.pt"), 0.5),
        "Cu fcc (108 atoms)": (crystal, os.path.join(ROOT, "models", "cu-emt-plain.pt"), 2.0),
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
    clock = Clock()
    run_md_batched(model, atoms, [variant], replicas=n, temperatures=[300.0], steps=steps, timestep=timestep,
                   symmetrize="D2", callback=clock, **COMMON, **extra)
    return clock.seconds_per_step()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-replicas", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= args.max_replicas]
    data = {"threads": args.threads, "steps": args.steps, "torch": torch.__version__, "rows": [], "variants": []}
    rows = []
    for label, (atoms, model, timestep) in systems().items():
        n_atoms = len(atoms)
        t_ase = ase_seconds_per_step(model, atoms, args.steps, timestep)
        for n in (1, 4):
            # sequential: N runs of the same cost; measured once more for N = 4 to show it
            seconds = t_ase if n == 1 else n * ase_seconds_per_step(model, atoms, args.steps, timestep)
            row = {"system": label, "engine": "ase", "replicas": n, "seconds_per_step": seconds,
                   "atom_steps_per_s": n * n_atoms / seconds}
            data["rows"].append(row)
            rows.append([label, "ASE", n, seconds * 1000, row["atom_steps_per_s"], 1.0])
            print(rows[-1], file=sys.stderr, flush=True)
        base = data["rows"][-2]["atom_steps_per_s"]
        for n in counts:
            steps = args.steps if n * n_atoms < 2000 else max(args.steps // 2, 6)
            seconds = torchsim_seconds_per_step(model, atoms, n, steps, timestep)
            row = {"system": label, "engine": "torchsim", "replicas": n, "seconds_per_step": seconds,
                   "atom_steps_per_s": n * n_atoms / seconds}
            data["rows"].append(row)
            rows.append([label, "TorchSim", n, seconds * 1000, row["atom_steps_per_s"], row["atom_steps_per_s"] / base])
            print(rows[-1], file=sys.stderr, flush=True)
    print(format_table(["system", "engine", "replicas", "ms/step", "atom-steps/s", "vs ASE"], rows))

    atoms, model, timestep = systems()["ethanol (9 atoms)"]
    vrows = []
    for variant in ("raw", "stochastic", "corrected", "corrected (export)", "symmetrized"):
        if variant == "corrected (export)":
            from ase_symdiag.md.torchsim_models import build_variant

            spec = {"corrected_export": build_variant("corrected", model, atoms, corrected_export=True)[0]}
            clock = Clock()
            run_md_batched(model, atoms, spec, replicas=16, temperatures=[300.0], steps=args.steps,
                           timestep=timestep, callback=clock, **COMMON)
            seconds = clock.seconds_per_step()
        else:
            seconds = torchsim_seconds_per_step(model, atoms, 16, args.steps, timestep, variant=variant)
        data["variants"].append({"variant": variant, "replicas": 16, "seconds_per_step": seconds})
        vrows.append([variant, 16, seconds * 1000, seconds / 16 * 1000])
        print(vrows[-1], file=sys.stderr, flush=True)
    n = min(64, args.max_replicas)
    for deterministic in (False, True):
        seconds = torchsim_seconds_per_step(model, atoms, n, args.steps, timestep, deterministic=deterministic)
        name = "raw, unoptimized TorchScript" if deterministic else "raw, optimized TorchScript (default)"
        data["variants"].append({"variant": name, "replicas": n, "seconds_per_step": seconds})
        vrows.append([name, n, seconds * 1000, seconds / n * 1000])
    print()
    print("ethanol, TorchSim, per variant (symmetrized: D2h, 8 operations)")
    print(format_table(["variant", "replicas", "ms/step", "ms/replica-step"], vrows))
    if args.json:
        write_json(args.json, data)
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
