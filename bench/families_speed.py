"""Symmetrized Orb-v3: our batched average against one ORBCalculator call per rotation.

Reference: metatomic-ase's operation set (Lebedev + in-plane circle, ``l_max=3``,
with inversion: 84 operations, :func:`ase_symdiag.o3.quadrature.lebedev_quadrature`),
each rotated copy evaluated by orb-models' own ``ORBCalculator`` (one ASE call per
rotation, :func:`ase_symdiag.backends.ase.calculator_predictions`; metatomic-ase's
SymmetrizedCalculator cannot wrap an ORBCalculator). Ours: the batched Orb adapter
(:class:`ase_symdiag.backends.orb.OrbModel`) under
:class:`ase_symdiag.md.torchsim_models.SymmetrizedModel`, first on the same 84
operations, then on the smallest set with the same measured exactness degree. Also
one plain evaluation (ORBCalculator, and our adapter). Random-weight Orb-v3 direct
(the real architecture; ``--small`` for a quick check), float32 as orb runs by
default, CPU, one thread, a 64-atom diamond-Si cell and ethanol (9 atoms).

Rounds are interleaved and the best of ``--repeats`` is kept. Goal: ours on the
smallest set >= 3x faster than the reference; ours per rotation <= one plain call.

    python bench/families_speed.py --repeats 3 --json bench_families.json
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore")  # torch.jit deprecations, orb's numpy-2 warnings

import torch  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402

from ase_symdiag.report import format_table, write_json  # noqa: E402


def structures() -> dict:
    """A 64-atom periodic cell (diamond Si, 2x2x2 conventional) and ethanol (9 atoms), rattled."""
    si = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    si.rattle(0.05, seed=1)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.02, seed=2)
    return {"Si64": si, "ethanol": ethanol}


def best_times(jobs: dict, repeats: int, warmup: int = 1) -> dict:
    """Best wall time (s) of each job, rounds interleaved after ``warmup`` untimed rounds."""
    best = {name: float("inf") for name in jobs}
    for round_ in range(warmup + repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            if round_ >= warmup:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--l-max", type=int, default=3, help="metatomic-ase l_max of the reference set (default 3: 84 ops)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="rotated copies per model call (ours)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="a small random Orb-v3 (quick check) instead of the real size")
    parser.add_argument("--structures", nargs="+", default=None, help="subset of: Si64 ethanol")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from orb_models.forcefield.calculator import ORBCalculator
    import torch_sim as ts

    from ase_symdiag.backends.ase import calculator_predictions
    from ase_symdiag.backends.orb import OrbModel, build_architecture
    from ase_symdiag.md.torchsim_models import SymmetrizedModel
    from ase_symdiag.o3.quadrature import lebedev_quadrature, smallest_exact_quadrature

    sizes = {"latent_dim": 64, "base_mlp_hidden_dim": 128, "num_message_passing_steps": 2} if args.small else {}
    torch.manual_seed(0)
    regressor = build_architecture("orb-v3-direct", **sizes).float().eval()
    n_parameters = sum(p.numel() for p in regressor.parameters())
    reference_set = lebedev_quadrature(args.l_max)
    smallest = smallest_exact_quadrature(reference_set.degree)
    calculator = ORBCalculator(regressor, device="cpu")
    ours = OrbModel(regressor, dtype=torch.float32)
    same = SymmetrizedModel(ours, reference_set, batch_size=args.batch_size)
    small = SymmetrizedModel(ours, smallest, batch_size=args.batch_size)

    rows, records = [], []
    for name, atoms in structures().items():
        if args.structures and name not in args.structures:
            continue
        state = ts.io.atoms_to_state([atoms], device=torch.device("cpu"), dtype=torch.float32)

        def plain_calculator():
            work = atoms.copy()
            work.calc = calculator
            work.get_forces()

        def reference():
            return calculator_predictions(calculator, atoms, reference_set.rotations, label=name)

        best = best_times(
            {
                "plain ORBCalculator": plain_calculator,
                "plain ours": lambda: ours(state),
                "reference": reference,
                "ours same": lambda: same(state),
                "ours smallest": lambda: small(state),
            },
            args.repeats,
        )
        # the two averages of the same set agree (float32 round-off)
        ref = reference()
        energy_ref = float(np.dot(reference_set.weights, ref.energy))
        energy_same = float(same(state)["energy"][0])
        record = {
            "structure": name,
            "atoms": len(atoms),
            **{f"{key.replace(' ', '_')}_s": value for key, value in best.items()},
            "reference_ops": reference_set.size,
            "smallest_ops": smallest.size,
            "smallest_name": smallest.name,
            "exactness_degree": reference_set.degree,
            "speedup_same_set": best["reference"] / best["ours same"],
            "speedup_smallest": best["reference"] / best["ours smallest"],
            "ours_per_rotation_over_plain": best["ours same"] / reference_set.size / best["plain ORBCalculator"],
            "energy_same_set_minus_reference_eV": energy_same - energy_ref,
        }
        records.append(record)
        rows.append([
            name, len(atoms), best["plain ORBCalculator"], best["reference"], best["ours same"],
            record["ours_per_rotation_over_plain"], f"{smallest.name} ({smallest.size})", best["ours smallest"],
            record["speedup_same_set"], record["speedup_smallest"], record["energy_same_set_minus_reference_eV"],
        ])
        print(f"{name}: {record}", flush=True)
    print(
        f"random Orb-v3 direct ({n_parameters / 1e6:.2f} M parameters{', small' if args.small else ''}), float32; "
        f"reference: ORBCalculator per rotation over metatomic-ase lebedev:{args.l_max} ({reference_set.size} ops, "
        f"exact to degree {reference_set.degree}); torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"batch size {args.batch_size}, best of {args.repeats}"
    )
    headers = ["structure", "atoms", "plain s", "reference s", "ours same-set s", "ours per rotation / plain",
               "smallest set", "ours s", "x same set", "x smallest", "dE same set eV"]
    print(format_table(headers, rows))
    if args.json:
        write_json(args.json, {"parameters": n_parameters, "small": args.small, "l_max": args.l_max,
                               "threads": torch.get_num_threads(), "results": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
