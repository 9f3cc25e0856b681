"""``ase-symdiag pointcloud``: diagnostics of a point-cloud model on toy LArTPC events."""

from __future__ import annotations

import argparse
import os

from ase_symdiag.cli.common import check_outputs, lmax_type, nonnegative_int, output_file, plot_file, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pointcloud",
        help="symmetry diagnostics of a point-cloud model (PointNet on toy LArTPC events)",
        description=(
            "Load a PointNet-style segmentation model (a models/pointnet/*.pt file, or a directory "
            "of them), generate toy LArTPC events, and print the invariance errors of the "
            "segmentation and event outputs under Haar-random O(3) operations, the spectrum of "
            "their orientation dependence, and the invariant fraction of each layer."
        ),
    )
    p.add_argument("model", help="a .pt file written by scripts/train_pointnet.py, or a directory of them")
    p.add_argument("--events", type=positive_int, default=4, help="number of test events (default 4)")
    p.add_argument("--seed", type=nonnegative_int, default=12345, help="event and rotation seed (default 12345)")
    p.add_argument("--lmax", type=lmax_type, default=3, help="largest lambda resolved (default 3)")
    p.add_argument("--rotations", type=positive_int, default=16, help="Haar-random operations for the errors (default 16)")
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the results as JSON")
    p.add_argument("--plot", metavar="OUT.png", type=plot_file, help="heat map of layer x channel fractions")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Diagnose each model; torch runs single-threaded and its thread count is restored."""
    from ase_symdiag.torch_state import torch_threads

    check_outputs({"--json": args.json, "--plot": args.plot}, {"model": args.model})
    with torch_threads(1):  # small kernels: one thread is the fastest (and restored for callers of main)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """:func:`run` with torch's thread count set."""
    from ase_symdiag.errors import ModelError
    from ase_symdiag.pointcloud.diagnostics import analyse_model, spectra_table
    from ase_symdiag.pointcloud.lartpc import make_dataset
    from ase_symdiag.pointcloud.pointnet import load_model
    from ase_symdiag.report import format_table, write_json

    if os.path.isdir(args.model):
        paths = sorted(os.path.join(args.model, f) for f in os.listdir(args.model) if f.endswith(".pt"))
    else:
        paths = [args.model]
    if not paths:
        raise ModelError(f"no .pt model in {args.model}")
    results, reports, spectra = {}, {}, {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        model, config = load_model(path)
        events = make_dataset(args.events, config["n_points"], seed=args.seed)
        res = analyse_model(model, events, lmax=args.lmax, n_rotations=args.rotations, seed=args.seed, label=name)
        results[name] = res
        reports[name] = res["layers"]
        spectra[name] = res["spectra"]
    rows = []
    for name, res in results.items():
        for out, s in res["error_summary"].items():
            rows.append([name, out, s["rms"], s["max"], s["relative_rms"], s["label_flip"]])
    print(f"invariance under {args.rotations} Haar-random O(3) operations, {args.events} events (float64)")
    print(format_table(["model", "output", "rms", "max", "relative", "argmax flips"], rows))
    print()
    print(spectra_table(spectra, args.lmax))
    for name, report in reports.items():
        print()
        print(f"model {name}")
        print(report.table())
    if args.json:
        write_json(args.json, {
            name: {
                "errors": [e.to_dict() for e in res["errors"]],
                "error_summary": res["error_summary"],
                "spectra": {k: v.to_dict() for k, v in res["spectra"].items()},
                "layers": res["layers"].to_dict(),
            }
            for name, res in results.items()
        })
        print(f"results written to {args.json}")
    if args.plot:
        from ase_symdiag.plots import plot_representations

        plot_representations(reports, args.plot)
        print(f"heat map written to {args.plot}")
    return 0
