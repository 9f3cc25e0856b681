"""``ase-symdiag spectrum``: which O(3) channels (lambda, parity) carry the breaking."""

from __future__ import annotations

import argparse

from ase_symdiag.cli.common import (
    add_model_structures, check_orientations, check_outputs, lmax_type, output_file, plot_file, show_progress,
    write_outputs,
)
from ase_symdiag.metrics.spectrum import N_CHECK


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "spectrum",
        help="decompose the symmetry breaking into O(3) channels (lambda, parity)",
        description=(
            "For each structure, evaluate MODEL on a quadrature exact to degree 2*LMAX, "
            "back-rotate energy, forces and stress, and split their variance over O(3) "
            "into angular channels lambda <= LMAX of even (+) and odd (-) parity. Prints "
            "the RMS amplitude per channel; '>L' is the breaking not attributed to channels "
            "<= LMAX (unresolved), measured at Haar-random check orientations."
        ),
    )
    add_model_structures(p, variant=True)
    p.add_argument("--lmax", type=lmax_type, default=3, help="largest lambda resolved (default 3)")
    p.add_argument(
        "--check-orientations", type=check_orientations, default=N_CHECK,
        help=f"Haar-random orientations per structure measuring the breaking above --lmax (default {N_CHECK})",
    )
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the spectra as JSON")
    p.add_argument("--plot", metavar="OUT.png", type=plot_file, help="plot RMS amplitude against lambda")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ase_symdiag.cli.common import load_handle, model_name
    from ase_symdiag.drivers.spectrum import measure_spectra
    from ase_symdiag.metrics.spectrum import spectrum_table
    from ase_symdiag.plots import plot_spectra
    from ase_symdiag.structures import read_structures

    check_outputs({"--json": args.json, "--plot": args.plot}, {"model": args.model, "structures": args.structures, "extensions folder": args.extensions})
    handle = load_handle(args)
    structures = read_structures(args.structures, index=args.index)
    spectra = measure_spectra(
        handle, structures, lmax=args.lmax, batch_size=args.batch_size, n_check=args.check_orientations,
        progress=show_progress(args.quiet),
    )
    print(spectrum_table(spectra))
    write_outputs(args, lambda: {"model": model_name(handle), "spectra": [s.to_dict() for s in spectra]}, "spectra",
                  lambda path: plot_spectra(spectra, path), "plot")
    return 0
