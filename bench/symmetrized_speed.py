"""Symmetrized inference: ase-symdiag against metatomic-ase's SymmetrizedCalculator.

Same model, same structure, same quadrature (metatomic-ase's Lebedev set at
``l_max``), timed side by side in one run; plus ase-symdiag on the smallest
quadrature with the same exactness degree, and one plain evaluation of the model
(metatomic-ase's MetatomicCalculator, energy + forces + stress). The calculators are
timed in turn, round after round, and the best round of each is kept, so that load
from other processes hits all of them alike. "ours per rotation / plain" is the
cost of one rotated copy in our averaging over one plain evaluation (goal <= 1).
Prints a table and the ratios, writes JSON with ``--json`` and Markdown with
``--markdown``.

    python bench/symmetrized_speed.py --model models/morse-broken-l2.pt --l-max 3 --threads 1

Run it from any directory: it imports the ase_symdiag of this checkout (an editable
install elsewhere would otherwise be picked up).
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from ase.build import bulk, molecule

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore", message=".*TorchScript.*")
warnings.filterwarnings("ignore", message=".*torch.jit.*")

from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator  # noqa: E402

from ase_symdiag import SymDiagCalculator  # noqa: E402
from ase_symdiag.o3.quadrature import lebedev_quadrature  # noqa: E402
from ase_symdiag.report import format_table, write_json  # noqa: E402


def structures(species: str, atomic_types):
    """Periodic fcc cells of 32 and 108 atoms, and a molecule (ethanol if the model
    knows C, H, O, else a 55-atom icosahedral cluster of ``species``)."""
    from ase.cluster import Icosahedron

    out = {}
    for n in (2, 3):
        atoms = bulk(species, "fcc", a=3.61, cubic=True) * (n, n, n)
        atoms.rattle(0.05, seed=n)
        out[f"{species}{len(atoms)}"] = atoms
    if {1, 6, 8} <= set(atomic_types):
        mol = molecule("CH3CH2OH")
        name = "ethanol"
    else:
        mol = Icosahedron(species, 3)
        name = f"{species}{len(mol)}-cluster"
    mol.rattle(0.02, seed=1)
    out[name] = mol
    return out


def timed(calcs: dict, atoms, repeats: int, warmup: int = 2) -> dict:
    """Best wall time of a full energy+forces(+stress) evaluation per calculator,
    seconds: ``warmup`` untimed rounds (TorchScript specialises on the first calls),
    then ``repeats`` rounds, each calling every calculator once in turn."""
    properties = ["energy", "forces"] + (["stress"] if atoms.pbc.all() else [])
    best = {name: float("inf") for name in calcs}
    for repeat in range(warmup + repeats):
        for name, calc in calcs.items():
            work = atoms.copy()
            work.positions += 1e-6 * np.random.default_rng(repeat).normal(size=work.positions.shape)
            start = time.perf_counter()
            calc.calculate(work, properties, ["positions", "numbers", "cell", "pbc"])
            if repeat >= warmup:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--l-max", type=int, default=3)
    parser.add_argument("--species", default="Cu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="copies per model call at most (both)")
    parser.add_argument("--structures", nargs="+", default=None, help="subset of the structure names")
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    q = lebedev_quadrature(args.l_max)
    rows, records = [], []
    from ase_symdiag import ModelHandle

    atomic_types = ModelHandle.load(args.model).atomic_types
    for name, atoms in structures(args.species, atomic_types).items():
        if args.structures and name not in args.structures:
            continue
        calcs = {
            "plain": MetatomicCalculator(args.model, device=args.device),
            "theirs": SymmetrizedCalculator(MetatomicCalculator(args.model, device=args.device), l_max=args.l_max, batch_size=args.batch_size),
            "same": SymDiagCalculator(args.model, device=args.device, symmetrize=f"lebedev:{args.l_max}", batch_size=args.batch_size),
            "small": SymDiagCalculator(args.model, device=args.device, symmetrize=q.degree, batch_size=args.batch_size),
        }
        small = calcs["small"]
        best = timed(calcs, atoms, args.repeats)
        t_plain, t_theirs, t_same, t_small = best["plain"], best["theirs"], best["same"], best["small"]
        per_rotation = t_same / q.size
        record = {
            "structure": name,
            "atoms": len(atoms),
            "plain_s": t_plain,
            "metatomic_ase_s": t_theirs,
            "metatomic_ase_ops": q.size,
            "ours_same_quadrature_s": t_same,
            "ours_per_rotation_s": per_rotation,
            "ours_per_rotation_over_plain": per_rotation / t_plain,
            "ours_smallest_s": t_small,
            "ours_smallest_ops": small.quadrature.size,
            "ours_smallest_name": small.quadrature.name,
            "speedup_same_quadrature": t_theirs / t_same,
            "speedup_smallest": t_theirs / t_small,
        }
        records.append(record)
        rows.append([name, len(atoms), t_plain, t_theirs, t_same, per_rotation / t_plain,
                     f"{small.quadrature.name} ({small.quadrature.size})", t_small, t_theirs / t_same, t_theirs / t_small])
        print(f"{name}: {record}", flush=True)
    print(
        f"model {args.model}; metatomic-ase SymmetrizedCalculator l_max={args.l_max} ({q.size} ops, exact to degree "
        f"{q.degree}); torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"batch size {args.batch_size}, best of {args.repeats}"
    )
    headers = ["structure", "atoms", "plain s", "metatomic-ase s", "ours same-q s", "ours per rotation / plain",
               "ours smallest-q", "ours s", "x same-q", "x smallest"]
    print(format_table(headers, rows))
    if args.markdown:
        command = "python bench/symmetrized_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
        lines = [f"model `{args.model}`, metatomic-ase l_max={args.l_max} ({q.size} ops), torch {torch.__version__}, "
                 f"{torch.get_num_threads()} thread(s), device {args.device}, batch size {args.batch_size}, "
                 f"best of {args.repeats} interleaved rounds", "", "```bash", command, "```", "",
                 "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in rows:
            lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
        with open(args.markdown + ".tmp", "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(args.markdown + ".tmp", args.markdown)
    if args.json:
        write_json(args.json, {"model": args.model, "l_max": args.l_max, "device": args.device, "results": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
