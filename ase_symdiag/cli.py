"""Command line: ``ase-symdiag <command> ...`` (``ase-symdiag <command> --help``).

Exit codes: 0 success, 1 a requested threshold was exceeded, 2 bad input.
Errors print one line; ``--traceback`` shows the full Python traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import List, Optional


class CLIError(Exception):
    """A usage problem reported in one line."""


def _add_check(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="check that energy, forces and stress transform correctly under O(3)",
        description=(
            "Evaluate MODEL on every structure of STRUCTURES and on copies rotated by "
            "random O(3) operations (half of them improper), and report the energy "
            "invariance error and the force/stress equivariance errors. Exits with 1 "
            "when a --max-* threshold is exceeded, so it can gate a production run."
        ),
    )
    p.add_argument("model", help="metatomic model file (.pt)")
    p.add_argument("structures", help="any ASE-readable file (extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default=":", help="ASE index of the structures to read (default ':')")
    p.add_argument("-n", "--rotations", type=int, default=8, help="number of random O(3) operations (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rotation sampler (default 0)")
    p.add_argument("--proper-only", action="store_true", help="only proper rotations (for chiral models)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: model's first available)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's")
    p.add_argument("--batch-size", type=int, default=16, help="rotated copies per model call (default 16)")
    p.add_argument("--no-direct", action="store_true", help="skip the model's non-conservative outputs")
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.add_argument("--max-force-error", type=float, metavar="X", help="fail if any RMS force error > X eV/Å")
    p.add_argument("--max-relative-force-error", type=float, metavar="X", help="fail if any RMS force error / RMS force > X")
    p.add_argument("--max-energy-error", type=float, metavar="X", help="fail if any |dE| > X meV/atom")
    p.add_argument("--max-stress-error", type=float, metavar="X", help="fail if any ||dS|| > X GPa")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_check)


def _run_check(args) -> int:
    from .equivariance import check_equivariance
    from .report import write_json
    from .structures import read_structures

    structures = read_structures(args.structures, index=args.index)
    report = check_equivariance(
        args.model,
        structures,
        n_rotations=args.rotations,
        seed=args.seed,
        improper=not args.proper_only,
        direct=not args.no_direct,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(report.table())
    summary = report.summary()
    failures = []
    checks = [
        ("max_force_error", "force_rms_eV_per_A", "RMS force error", "eV/Å"),
        ("max_relative_force_error", "force_relative", "relative force error", ""),
        ("max_energy_error", "energy_max_meV_per_atom", "energy error", "meV/atom"),
        ("max_stress_error", "stress_max_GPa", "stress error", "GPa"),
    ]
    thresholds = {}
    for option, key, what, unit in checks:
        limit = getattr(args, option)
        if limit is None:
            continue
        thresholds[key] = limit
        value = summary[key]
        if value is not None and value > limit:
            failures.append(f"{what} {value:.3g} {unit} exceeds --{option.replace('_', '-')} {limit:g}".replace("  ", " "))
    if args.json:
        data = report.to_dict()
        data["thresholds"] = thresholds
        data["passed"] = not failures
        write_json(args.json, data)
        print(f"report written to {args.json}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _add_reference_model(subparsers) -> None:
    p = subparsers.add_parser(
        "reference-model",
        help="write an analytic metatomic model (exactly equivariant or with planted breaking)",
        description=(
            "Write a smooth Morse pair potential as a metatomic TorchScript model. It is "
            "exactly O(3)-equivariant unless --quadrupole (a planted lambda=2 energy term, "
            "eV/Å^2) or --direct-bias (a planted lambda=1 term in the direct forces, eV/Å) "
            "is given."
        ),
    )
    p.add_argument("output", help="where to write the .pt file")
    p.add_argument("--quadrupole", type=float, default=0.0, help="planted lambda=2 amplitude kappa, eV/Å^2")
    p.add_argument("--axis", type=float, nargs=3, default=(0.0, 0.0, 1.0), help="axis of the planted term")
    p.add_argument("--direct", action="store_true", help="add non-conservative force/stress outputs")
    p.add_argument("--direct-bias", type=float, nargs=3, default=(0.0, 0.0, 0.0), help="planted direct-force vector, eV/Å")
    p.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius, Å (default 5)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.set_defaults(run=_run_reference_model)


def _run_reference_model(args) -> int:
    from .reference_models import export_pair_potential

    direct = args.direct or any(b != 0.0 for b in args.direct_bias)
    export_pair_potential(
        args.output,
        dtype=args.dtype,
        quadrupole=args.quadrupole,
        axis=args.axis,
        direct=direct,
        direct_bias=args.direct_bias,
        cutoff=args.cutoff,
    )
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ase-symdiag",
        description="Rotational-symmetry diagnostics for machine-learned interatomic potentials.",
    )
    parser.add_argument("-T", "--traceback", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    subparsers.required = True
    for add in COMMANDS:
        add(subparsers)
    return parser


COMMANDS = [_add_check, _add_reference_model]


def main(argv: Optional[List[str]] = None) -> int:
    from .errors import SymDiagError

    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # torch >= 2.10 deprecates TorchScript, which metatomic models are made of
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.*")
        try:
            return int(args.run(args))
        except (SymDiagError, CLIError, FileNotFoundError) as error:
            if args.traceback:
                raise
            print(f"ase-symdiag {args.command}: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"ase-symdiag {args.command}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
