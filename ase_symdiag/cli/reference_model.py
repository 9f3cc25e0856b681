"""``ase-symdiag reference-model``: write an analytic metatomic model (controls)."""

from __future__ import annotations

import argparse

from ase_symdiag.cli.common import check_outputs, finite_float, output_file, positive_float


def add_parser(subparsers) -> None:
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
    p.add_argument("output", type=output_file, help="where to write the .pt file")
    p.add_argument("--quadrupole", type=finite_float, default=0.0, help="planted lambda=2 amplitude kappa, eV/Å^2")
    p.add_argument("--axis", type=finite_float, nargs=3, default=(0.0, 0.0, 1.0), help="axis of the planted term (not zero)")
    p.add_argument("--direct", action="store_true", help="add non-conservative force/stress outputs")
    p.add_argument("--direct-bias", type=finite_float, nargs=3, default=(0.0, 0.0, 0.0), help="planted direct-force vector, eV/Å")
    p.add_argument("--cutoff", type=positive_float, default=5.0, help="cutoff radius, Å (default 5)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.set_defaults(run=run)

def run(args: argparse.Namespace) -> int:
    from ase_symdiag.cli.common import usage
    from ase_symdiag.reference.analytic import export_pair_potential

    check_outputs({"OUTPUT": args.output}, {})
    if all(a == 0.0 for a in args.axis):
        raise usage("--axis must not be the zero vector")
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
