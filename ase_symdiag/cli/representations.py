"""``ase-symdiag representations``: the O(3) content of each learned layer."""

from __future__ import annotations

import argparse
import os

from ase_symdiag.cli.common import add_model_structures, check_outputs, lmax_type, output_file, plot_file, write_outputs


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "representations",
        help="how much of each internal layer is invariant, and in which O(3) channels the rest lives",
        description=(
            "Character-project the per-atom feature outputs of MODEL (e.g. 'mtt::features::layer0', "
            "metatrain's 'mtt::features::*', 'feature') as functions of the structure's orientation, "
            "and print for each layer the fraction of its mean square in each (lambda, parity) "
            "channel; 'invariant' is the (0, +) fraction. A metatrain checkpoint (.ckpt) as MODEL "
            "shows every layer of its PET: each GNN layer's node and edge features and the heads."
        ),
    )
    add_model_structures(p, variant=True)
    p.add_argument("--layers", nargs="+", default=None, help="feature outputs (or suffixes, e.g. layer0); default: all")
    p.add_argument("--lmax", type=lmax_type, default=3, help="largest lambda resolved (default 3)")
    p.add_argument("--compare", metavar="MODEL2", default=None, help="a second model shown side by side")
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the fractions as JSON")
    p.add_argument("--plot", metavar="OUT.png", type=plot_file, help="heat map of layer x channel fractions")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ase_symdiag.backends.metatomic.metatrain import checkpoint_handle, checkpoint_note, is_checkpoint
    from ase_symdiag.cli.common import load_handle, require_metatomic
    from ase_symdiag.drivers.representations import representation_content
    from ase_symdiag.plots import plot_representations
    from ase_symdiag.structures import read_structures

    check_outputs(
        {"--json": args.json, "--plot": args.plot},
        {"model": args.model, "structures": args.structures, "--compare model": args.compare,
         "extensions folder": args.extensions},
    )
    structures = read_structures(args.structures, index=args.index)
    reports = {}
    for path in [args.model] + ([args.compare] if args.compare else []):
        if is_checkpoint(path):
            handle = checkpoint_handle(path, device=args.device, dtype=args.dtype, variant=args.variant)
        else:
            handle = require_metatomic(load_handle(args, path), "representations (learned features)")
        report = representation_content(handle, structures, layers=args.layers, lmax=args.lmax, batch_size=args.batch_size)
        print(f"model {path}")
        print(report.table())
        note = checkpoint_note(handle)
        if note:
            print(note)
        reports[path] = report
    write_outputs(args, lambda: {path: report.to_dict() for path, report in reports.items()}, "fractions",
                  lambda path: plot_representations({os.path.basename(p): r for p, r in reports.items()}, path),
                  "heat map")
    return 0
