"""``ase-symdiag training-history``: per-layer symmetry content against epoch, from
the probes recorded by our reference trainer (:mod:`ase_symdiag.reference.probes`)
or measured on the checkpoints of a metatrain run
(:mod:`ase_symdiag.metrics.training_history`)."""

from __future__ import annotations

import argparse
import os

from ase_symdiag.cli.common import check_outputs, nonnegative_int, output_file, plot_file, positive_int
from ase_symdiag.cli.spectrum import lmax_type


def add_parser(subparsers) -> None:
    """Add ``training-history RUN...`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "training-history",
        help="per-layer invariant fraction (and output breaking) against epoch, from training checkpoints",
        description=(
            "Read the symmetry-content probes recorded by 'ase-symdiag train' (config key "
            "'probes') from one or more checkpoint.pt files, or measure them on the "
            "model_<epoch>.ckpt checkpoints of a metatrain run (a folder of 'mtt train', "
            "with --structures): per-layer invariant fraction and the energy, force and "
            "stress breaking of each epoch's model. Print them and plot 1 - invariant "
            "fraction of each layer against epoch."
        ),
    )
    p.add_argument("checkpoints", nargs="+", help="checkpoint.pt files, or metatrain run folders")
    p.add_argument("--structures", default=None, help="structures to measure metatrain checkpoints on (ASE-readable)")
    p.add_argument("--index", default=":", help="ASE index of --structures (default ':')")
    p.add_argument("--lmax", type=lmax_type, default=2, help="largest lambda of the layer content (default 2)")
    p.add_argument("-n", "--rotations", type=positive_int, default=8, help="operations of the output check (default 8)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the operations (default 0)")
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the histories as JSON")
    p.add_argument("--plot", metavar="OUT.png", type=plot_file, help="plot against epoch")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print (and optionally write and plot) the history of each run, labelled by the
    checkpoint's folder name (the folder's name for a metatrain run)."""
    from ase_symdiag.cli.common import usage
    from ase_symdiag.drivers.training_history import metatrain_history
    from ase_symdiag.metrics.training_history import OUTPUT_COLUMNS
    from ase_symdiag.reference.checkpoints import CheckpointError
    from ase_symdiag.reference.probes import plot_probe_history, probe_history
    from ase_symdiag.report import format_table, write_json
    from ase_symdiag.structures import read_structures

    check_outputs(
        {"--json": args.json, "--plot": args.plot},
        {f"checkpoint #{i + 1}": path for i, path in enumerate(args.checkpoints)},
    )
    histories, measured = {}, {}
    structures = None
    for path in args.checkpoints:
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint '{path}' does not exist")
        if os.path.isdir(path):  # a metatrain run
            if args.structures is None:
                raise usage(f"'{path}' is a folder (a metatrain run): give --structures to measure its checkpoints on")
            if structures is None:
                structures = read_structures(args.structures, index=args.index)
            history = metatrain_history(path, structures, lmax=args.lmax, n_rotations=args.rotations, seed=args.seed)
            label = history.run
            measured[label] = history
            histories[label] = history.layers
            continue
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
    if measured:
        print(f"\noutput breaking, worst over the structures and {args.rotations} operations (seed {args.seed})")
        rows = [row for history in measured.values() for row in history.output_rows()]
        print(format_table(["run", "epoch"] + [name for _, name in OUTPUT_COLUMNS], rows))
    if args.json:
        write_json(
            args.json,
            {
                label: measured[label].to_dict() if label in measured
                else {layer: [list(p) for p in points] for layer, points in layers.items()}
                for label, layers in histories.items()
            },
        )
    if args.plot:
        plot_probe_history(histories, args.plot)
        print(f"plot written to {args.plot}")
    return 0
