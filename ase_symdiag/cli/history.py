"""``ase-symdiag training-history``: the per-layer symmetry-content probes recorded
during training (:mod:`ase_symdiag.reference.probes`), against epoch."""

from __future__ import annotations

import argparse
import os

from ase_symdiag.cli.common import check_outputs, output_file, plot_file


def add_parser(subparsers) -> None:
    """Add ``training-history CHECKPOINT...`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "training-history",
        help="per-layer invariant fraction against epoch, from training checkpoints",
        description=(
            "Read the symmetry-content probes recorded by 'ase-symdiag train' (config key "
            "'probes') from one or more checkpoints, e.g. with and without augmentation, "
            "print them and plot 1 - invariant fraction of each layer against epoch."
        ),
    )
    p.add_argument("checkpoints", nargs="+", help="checkpoint.pt files")
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the histories as JSON")
    p.add_argument("--plot", metavar="OUT.png", type=plot_file, help="plot against epoch")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print (and optionally write and plot) the probes of each checkpoint, labelled by
    the checkpoint's folder name."""
    from ase_symdiag.reference.checkpoints import CheckpointError
    from ase_symdiag.reference.probes import plot_probe_history, probe_history
    from ase_symdiag.report import format_table, write_json

    check_outputs(
        {"--json": args.json, "--plot": args.plot},
        {f"checkpoint #{i + 1}": path for i, path in enumerate(args.checkpoints)},
    )
    histories = {}
    for path in args.checkpoints:
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint '{path}' does not exist")
        label = os.path.basename(os.path.dirname(os.path.abspath(path)))
        histories[label] = probe_history(path)
        if not histories[label]:
            raise CheckpointError(f"{path}: no probes recorded (set 'probes:' in the training config)")
    rows = []
    for label, layers in histories.items():
        for layer, points in sorted(layers.items()):
            for epoch, fraction in points:
                rows.append([label, layer, epoch, fraction, 1.0 - fraction])
    print(format_table(["run", "layer", "epoch", "invariant", "1 - invariant"], rows))
    if args.json:
        write_json(
            args.json,
            {label: {layer: [list(p) for p in points] for layer, points in layers.items()} for label, layers in histories.items()},
        )
    if args.plot:
        plot_probe_history(histories, args.plot)
        print(f"plot written to {args.plot}")
    return 0
