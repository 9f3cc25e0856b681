"""Peak memory of symmetrized inference against the plain model, by atoms and operations.

Every measurement runs in a fresh Python process (so peaks do not leak between
rows): it loads the model, builds a rattled fcc Cu supercell, records the resident
memory (RSS), runs ONE energy + forces + stress evaluation and reports the peak RSS
(``ru_maxrss``; on CUDA also ``torch.cuda.max_memory_allocated``). Operations: 1 is
the plain model (no averaging); 24, 48 and 120 are the T_h, O_h and I_h groups with
inversion. Paths: ``calculator`` (SymDiagCalculator) and ``export`` (metatomic-ase's
MetatomicCalculator on an ``export_symmetrized`` file, forces from the exported
energy's gradient, as LAMMPS ``non_conservative off`` gets them).

    python bench/symmetrized_memory.py --model models/morse-broken-l2.pt \\
        --cells 6 14 30 --ops 1 24 48 120 --max-ops-above 20000:24 --paths calculator export \\
        --json docs/benchmarks/memory-morse.json --markdown docs/benchmarks/memory-morse.md

The ratio column is peak(symmetrized) / peak(plain) for the same structure and path.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

# this checkout's package, not whichever one is pip-installed in editable mode
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GROUPS = {1: None, 24: "T", 48: "O", 120: "I"}


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(model: str, cells: int, ops: int, path: str, device: str, threads: int, trim: bool = True) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from ase.build import bulk

    torch.set_num_threads(threads)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (cells, cells, cells)
    atoms.rattle(0.02, seed=1)
    quadrature = GROUPS[ops]
    if not trim:  # what the calculator's malloc_trim between chunks buys (and costs)
        import ase_symdiag.backends.metatomic.evaluation as evaluation

        evaluation.release_memory = lambda: None
    if path == "calculator":
        from ase_symdiag import SymDiagCalculator

        calc = SymDiagCalculator(model, device=device, symmetrize=quadrature)
    else:
        import tempfile

        from metatomic_ase import MetatomicCalculator

        from ase_symdiag.backends.metatomic.export import export_symmetrized

        target = model
        if quadrature is not None:
            target = os.path.join(tempfile.mkdtemp(), "symmetrized.pt")
            export_symmetrized(model, target, quadrature=quadrature)
        calc = MetatomicCalculator(target, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mb()
    start = time.perf_counter()
    calc.calculate(atoms, ["energy", "forces", "stress"], ["positions", "numbers", "cell", "pbc"])
    elapsed = time.perf_counter() - start
    forces = np.asarray(calc.results["forces"])
    out = {
        "atoms": len(atoms),
        "operations": ops,
        "path": path if trim else f"{path} (no trim)",
        "rss_before_MB": before,
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": elapsed,
        "max_force": float(np.abs(forces).max()),
    }
    if device.startswith("cuda"):
        out["cuda_peak_MB"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--cells", type=int, nargs="+", default=[6, 14], help="n for n x n x n cubic fcc cells (4 n^3 atoms)")
    parser.add_argument("--ops", type=int, nargs="+", default=[1, 24, 48, 120], choices=sorted(GROUPS))
    parser.add_argument("--max-ops-above", default=None, metavar="ATOMS:OPS",
                        help="above ATOMS atoms run only operation counts <= OPS (time)")
    parser.add_argument("--paths", nargs="+", default=["calculator"], choices=["calculator", "export"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None, help="write the table and the command as Markdown")
    parser.add_argument("--no-trim", action="store_true",
                        help="calculator path without malloc_trim between chunks (to measure what it buys and costs)")
    parser.add_argument("--_child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child is not None:
        model, cells, ops, path = args._child
        print("RESULT " + json.dumps(child(model, int(cells), int(ops), path, args.device, args.threads, trim=not args.no_trim)))
        return 0

    limit = None
    if args.max_ops_above:
        atoms_limit, ops_limit = args.max_ops_above.split(":")
        limit = (int(atoms_limit), int(ops_limit))
    records = []
    for path in args.paths:
        for cells in args.cells:
            n_atoms = 4 * cells**3
            plain = None
            for ops in args.ops:
                if limit is not None and n_atoms > limit[0] and ops > limit[1]:
                    continue
                command = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--device", args.device,
                           "--threads", str(args.threads), *(["--no-trim"] if args.no_trim else []), "--_child", args.model, str(cells), str(ops), path]
                done = subprocess.run(command, capture_output=True, text=True)
                lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
                if done.returncode != 0 or not lines:
                    print(done.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"measurement failed: {path} {n_atoms} atoms {ops} operations")
                record = json.loads(lines[-1][len("RESULT "):])
                if ops == 1:
                    plain = record
                if plain is not None:
                    record["ratio_to_plain"] = record["peak_rss_MB"] / plain["peak_rss_MB"]
                    extra = record["peak_rss_MB"] - record["rss_before_MB"]
                    record["step_increment_ratio"] = extra / max(1e-9, plain["peak_rss_MB"] - plain["rss_before_MB"])
                records.append(record)
                print(
                    f"{record['path']:10s} {record['atoms']:7d} atoms {ops:4d} ops: peak {record['peak_rss_MB']:8.0f} MB "
                    f"(before step {record['rss_before_MB']:6.0f} MB), {record['seconds']:7.1f} s, "
                    f"x plain {record.get('ratio_to_plain', float('nan')):.2f}",
                    flush=True,
                )

    import torch

    header = (
        f"model `{args.model}`, device {args.device}, {args.threads} torch thread(s), torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}; one energy+forces+stress step per fresh process"
    )
    lines = [
        "| path | atoms | operations | peak RSS MB | RSS before step MB | step s | peak / plain peak | step increment / plain increment |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['path']} | {r['atoms']} | {r['operations']} | {r['peak_rss_MB']:.0f} | {r['rss_before_MB']:.0f} | "
            f"{r['seconds']:.1f} | {r.get('ratio_to_plain', float('nan')):.2f} | {r.get('step_increment_ratio', float('nan')):.2f} |"
        )
    command = "python bench/symmetrized_memory.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    print(header)
    print("\n".join(lines))
    if args.markdown:
        text = f"{header}\n\n```bash\n{command}\n```\n\n" + "\n".join(lines) + "\n"
        with open(args.markdown + ".tmp", "w") as handle:
            handle.write(text)
        os.replace(args.markdown + ".tmp", args.markdown)
    if args.json:
        with open(args.json + ".tmp", "w") as handle:
            json.dump({"model": args.model, "device": args.device, "threads": args.threads, "results": records}, handle, indent=2)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
