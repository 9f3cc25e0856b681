"""Time of one symmetrized step against the atom budget per model call (``chunk_atoms``).

Runs ``SymDiagCalculator(model, symmetrize=QUADRATURE, chunk_atoms=N)`` on a rattled
fcc Cu cell for each ``N`` (energy + forces + stress), round after round, and prints
the best time of each; used to choose
:data:`ase_symdiag.backends.metatomic.evaluation.CHUNK_ATOMS`.

    OMP_NUM_THREADS=1 python bench/chunk_size.py --model models/cu-emt-augmented.pt --cells 3 --budgets 108 216 512 1024
"""

import argparse
import os
import sys
import time
import warnings

# this checkout's package, not whichever one is pip-installed in editable mode
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cells", type=int, default=3, help="n for an n x n x n cubic fcc cell (4 n^3 atoms)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[108, 216, 512, 1024])
    parser.add_argument("--quadrature", default="lebedev:3", help="default: metatomic-ase's l_max=3 set (84 operations)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    import torch
    from ase.build import bulk

    from ase_symdiag import SymDiagCalculator

    torch.set_num_threads(args.threads)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (args.cells,) * 3
    atoms.rattle(0.02, seed=1)
    best = {}
    for _ in range(args.rounds):
        for budget in args.budgets:
            copy = atoms.copy()
            copy.calc = SymDiagCalculator(args.model, symmetrize=args.quadrature, chunk_atoms=budget)
            start = time.perf_counter()
            copy.get_forces()
            copy.get_stress()
            best[budget] = min(best.get(budget, float("inf")), time.perf_counter() - start)
    print(f"model {args.model}, {len(atoms)} atoms, quadrature {args.quadrature}, {args.threads} thread(s), "
          f"best of {args.rounds} rounds")
    for budget, seconds in best.items():
        print(f"chunk_atoms {budget:6d}: {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
