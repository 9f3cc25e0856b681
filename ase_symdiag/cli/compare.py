"""``ase-symdiag compare``: variants side by side (symmetry errors, accuracy, cost)."""

from __future__ import annotations

import argparse

from ase_symdiag.cli.common import (
    MODEL_HELP,
    add_model_options,
    check_outputs,
    load_handle,
    nonnegative_int,
    output_file,
    plot_file,
    positive_int,
    usage,
    write_outputs,
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="raw vs corrected vs symmetrized variants: symmetry errors, accuracy and cost",
        description=(
            "Evaluate variants of MODEL (raw, each correction, rotational averaging at a few "
            "orders) on STRUCTURES: equivariance errors, accuracy against the reference "
            "energies/forces the structures carry (extxyz energy/forces), model evaluations "
            "and wall time per step. Variants: 'raw', correction names joined with '+' "
            "('net_force+net_torque', 'point_group', 'stochastic', 'symmetric_stress'), "
            "'sym:L' or 'sym:O' for averaging, combinable ('sym:2+net_force')."
        ),
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("structures", help="any ASE-readable file")
    p.add_argument("--index", default=":", help="ASE index (default ':')")
    p.add_argument("--variants", default=None, help="comma-separated variants (default: a standard set)")
    p.add_argument("-n", "--rotations", type=positive_int, default=4, help="random O(3) operations (default 4)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--device", default=None)
    add_model_options(p)
    p.add_argument("--json", metavar="OUT", type=output_file)
    p.add_argument("--plot", metavar="OUT.png", type=plot_file)
    p.set_defaults(run=run)


def check_variant(variant: str) -> None:
    """Raise a one-line usage error for an empty or unknown variant (before any work)."""
    from ase_symdiag.compare import parse_variant
    from ase_symdiag.errors import SymDiagError

    if not variant or any(not part.strip() for part in variant.split("+")):
        raise usage(f"--variants: empty variant name in {variant!r} (use e.g. 'raw,sym:2,net_force')")
    try:
        kwargs = parse_variant(variant)  # checks the quadrature (o3.quadrature.parse_quadrature)
        if kwargs.get("corrections"):
            from ase_symdiag.corrections import resolve_corrections

            resolve_corrections(kwargs["corrections"])
    except (SymDiagError, ValueError, KeyError, TypeError) as error:
        raise usage(f"--variants {variant!r}: {error}") from None


def run(args: argparse.Namespace) -> int:
    from ase_symdiag.compare import compare_variants, plot_comparison
    from ase_symdiag.structures import read_frames, structure_label

    check_outputs({"--json": args.json, "--plot": args.plot}, {"model": args.model, "structures": args.structures, "extensions folder": args.extensions})
    images, frames = read_frames(args.structures, index=args.index)
    variants = None
    if args.variants is not None:
        variants = [v.strip() for v in args.variants.split(",")]
        for variant in variants:
            check_variant(variant)  # a bad name is one line before any work
    # the loader puts the model on --device; compare_variants refuses a device for non-metatomic models
    comparison = compare_variants(
        load_handle(args), images, variants, n_rotations=args.rotations, seed=args.seed,
        labels=[structure_label(atoms, frame) for atoms, frame in zip(images, frames)],
    )
    print(comparison.table())
    write_outputs(args, comparison.to_dict, "comparison", lambda path: plot_comparison(comparison, path), "plot")
    return 0
