"""MD speed of an exported model on CUDA (CPU for reference): steps per second.

Cu fcc supercells of 864 (~1,000) and 10,976 (~10,000) atoms, velocity Verlet
(ASE) with SymDiagCalculator, for the raw model and its symmetrized export (O_h,
48 operations); through LAMMPS (``fix external``, forces still from
SymDiagCalculator) when the ``lammps`` module loads. Without CUDA it prints a
message and exits 0 (``--cpu`` times the CPU alone). Budget: a few minutes on one GPU.

    python bench/md_gpu_speed.py [--model models/morse-equivariant.pt] [--json out.json]
"""

import argparse
import os
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", message=".*TorchScript.*")
warnings.filterwarnings("ignore", message=".*torch.jit.*")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

from ase_symdiag import SymDiagCalculator  # noqa: E402
from ase_symdiag.backends.metatomic.export import export_symmetrized  # noqa: E402
from ase_symdiag.errors import SymDiagError  # noqa: E402
from ase_symdiag.report import format_table, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def supercell(n):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (n, n, n)
    atoms.rattle(0.02, seed=n)
    rng = np.random.default_rng(n)
    atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * np.sqrt(atoms.get_masses() * 300 * units.kB)[:, None])
    return atoms


def steps_per_second(calc, atoms, steps, warmup=5):
    """Steps per second after ``warmup`` steps (TorchScript specialises during ~4 calls)."""
    atoms = atoms.copy()
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    dyn.run(warmup)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    dyn.run(steps)
    elapsed = time.perf_counter() - start
    return steps / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "morse-equivariant.pt"))
    parser.add_argument("--sizes", default="6,14", help="supercell repeats n (4 n^3 atoms; default 6,14)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps on CUDA (default 20)")
    parser.add_argument("--cpu-steps", type=int, default=3, help="timed steps on CPU (default 3)")
    parser.add_argument("--quadrature", default="O", help="symmetrized export (default O: 48 operations)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cpu", action="store_true", help="run on CPU even without CUDA")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu:
        print("md_gpu_speed: no CUDA device, skipped (use --cpu for CPU numbers alone)")
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tmp = tempfile.mkdtemp()
    symmetrized = os.path.join(tmp, "symmetrized.pt")
    export_symmetrized(args.model, symmetrized, quadrature=args.quadrature, batch_size=args.batch_size)
    models = {"raw": args.model, f"symmetrized ({args.quadrature})": symmetrized}
    devices = (["cuda"] if cuda else []) + ["cpu"]
    try:
        from lammps import lammps  # noqa: F401

        has_lammps = True
    except (ImportError, OSError) as error:
        has_lammps = False
        print(f"LAMMPS not available ({error}); ASE only")

    rows, data = [], []
    for n in (int(x) for x in args.sizes.split(",")):
        atoms = supercell(n)
        for device in devices:
            for label, path in models.items():
                steps = args.steps if device == "cuda" else args.cpu_steps
                if device == "cpu" and "symmetrized" in label and len(atoms) > 2000:
                    continue  # minutes per step on one CPU thread
                calc = SymDiagCalculator(path, device=device)
                try:
                    rate = steps_per_second(calc, atoms, steps)
                except (SymDiagError, RuntimeError) as error:  # e.g. CUDA out of memory
                    reason = str(error).split(":")[-1].strip()[:80]
                    print(f"{label:>18} {len(atoms):6d} atoms {device:4}: failed ({reason})", flush=True)
                    data.append({"atoms": len(atoms), "device": device, "model": label, "failed": str(error)[:500]})
                    rows.append([label, len(atoms), device, None, None, None])
                    if device == "cuda":
                        torch.cuda.empty_cache()
                    continue
                entry = {"atoms": len(atoms), "device": device, "model": label, "engine": "ase", "steps_per_s": rate,
                         "atom_steps_per_s": rate * len(atoms)}
                if has_lammps and device == "cuda":
                    from ase_symdiag.md import lammps_external_md

                    result = lammps_external_md(SymDiagCalculator(path, device=device), atoms, steps=steps)
                    entry["lammps_steps_per_s"] = 1.0 / result["seconds_per_step"]
                data.append(entry)
                rows.append([label, len(atoms), device, rate, rate * len(atoms) / 1e6, entry.get("lammps_steps_per_s")])
                print(f"{label:>18} {len(atoms):6d} atoms {device:4}: {rate:8.2f} steps/s", flush=True)
    name = torch.cuda.get_device_name(0) if cuda else "cpu only"
    print(f"\ndevice: {name}; torch {torch.__version__}; {torch.get_num_threads()} CPU thread(s)")
    print(format_table(["model", "atoms", "device", "steps/s", "Matom-steps/s", "LAMMPS steps/s"], rows))
    if args.json:
        write_json(args.json, {"device": name, "torch": torch.__version__, "results": data})
    return 0


if __name__ == "__main__":
    sys.exit(main())
