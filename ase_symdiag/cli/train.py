"""``ase-symdiag train`` and ``ase-symdiag export``: train a reference PET from a
config (:mod:`ase_symdiag.reference.training`) and export a checkpoint as a
metatomic model."""

from __future__ import annotations

import argparse
from typing import Optional

from ase_symdiag.cli.common import check_outputs, output_file, unwritable, usage


def add_parser(subparsers) -> None:
    """Add ``train CONFIG`` and ``export CHECKPOINT OUT.pt`` to an argparse subparsers object."""
    p = subparsers.add_parser("train", help="train a reference PET model from a YAML/TOML config (resumable)")
    p.add_argument("config", help="YAML or TOML training config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    p.set_defaults(run=run)

    p = subparsers.add_parser("export", help="export a training checkpoint as a metatomic model (.pt)")
    p.add_argument("checkpoint", help="checkpoint.pt written by 'train'")
    p.add_argument("output", type=output_file, help="output model file (.pt)")
    p.add_argument("--which", choices=["best", "last"], default="best")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None)
    p.add_argument("--name", default=None)
    p.set_defaults(run=run_export)


def _format(entry: Optional[dict]) -> str:
    return "n/a" if not entry else f"MAE {entry['mae']:.3f} RMSE {entry['rmse']:.3f}"


def run(args: argparse.Namespace) -> int:
    """Train (resuming from the checkpoint unless ``--fresh``) and print the test errors."""
    from ase_symdiag.reference.config import load_config, validate_config
    from ase_symdiag.reference.training import train, training_files

    config = load_config(args.config)
    files = training_files(validate_config(config))
    outputs = {"checkpoint": files["checkpoint"], "metrics": files["metrics"], "config 'export'": files["export"]}
    check_outputs(outputs, {"config": args.config, "data": files["data"]})
    for key, directory in (("output_dir", True), ("export", False)):  # before any epoch
        problem = files[key] and unwritable(files[key], directory=directory, create_folders=True)
        if problem:
            raise usage(f"config '{key}' '{files[key]}': {problem}")
    if args.no_progress:
        config["progress"] = False
    if args.fresh:
        config["resume"] = False
    metrics = train(config)
    test = metrics.get("test") or {}
    print(f"{metrics['name']}: {metrics['epochs_completed']}/{metrics['epochs_planned']} epochs, {metrics['training_time_s']:.0f} s")
    print(f"  test energy (meV/atom): {_format(test.get('energy_meV_per_atom'))}")
    print(f"  test forces (meV/Å):    {_format(test.get('forces_meV_per_A'))}")
    if test.get("stress_GPa"):
        print(f"  test stress (GPa):      {_format(test.get('stress_GPa'))}")
    if metrics.get("exported"):
        print(f"  exported to {metrics['exported']}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export the best (or last) model of a checkpoint."""
    from ase_symdiag.reference.checkpoints import load_checkpoint, model_from_checkpoint
    from ase_symdiag.reference.pet import export_pet

    check_outputs({"OUTPUT": args.output}, {"checkpoint": args.checkpoint})
    checkpoint = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint, args.which)
    name = args.name or checkpoint.get("config", {}).get("name", "pet")
    export_pet(model, args.output, name=name, dtype=args.dtype)
    print(f"exported {args.which} model of {args.checkpoint} to {args.output}")
    return 0
