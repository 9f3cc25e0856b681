"""Where the time of one calculator call goes on CUDA (cProfile of the last calls).

The pair count changes every call, as in MD; TorchScript's profiling executor
specialises during the first ~4 calls (about 1 s each on an H200), after which a call
on 864 atoms takes ~20-25 ms.

    python bench/gpu_profile.py --model models/cu-emt-augmented.pt [--n 6] [--symmetrize O]
"""

import argparse
import cProfile
import pstats
import time
import warnings

warnings.filterwarnings("ignore", message=".*TorchScript.*")
warnings.filterwarnings("ignore", message=".*torch.jit.*")

import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

from ase_symdiag import SymDiagCalculator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=6, help="supercell repeats (4 n^3 atoms)")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--symmetrize", default=None)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (args.n, args.n, args.n)
    calc = SymDiagCalculator(args.model, device=args.device, symmetrize=args.symmetrize)
    rng = np.random.default_rng(0)
    times = []
    profile = cProfile.Profile()
    for call in range(args.calls):
        work = atoms.copy()
        work.positions += rng.normal(scale=0.02, size=work.positions.shape)  # new pair count each call
        if call == args.calls - 3:
            profile.enable()
        start = time.perf_counter()
        calc.calculate(work, ["energy", "forces", "stress"], ["positions"])
        times.append(time.perf_counter() - start)
    profile.disable()
    print(f"{args.model} {len(atoms)} atoms, device {args.device}, symmetrize {args.symmetrize}")
    print("seconds per call:", " ".join(f"{t:.4f}" for t in times))
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
