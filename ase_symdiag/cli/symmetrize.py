"""``ase-symdiag symmetrize``: the cheapest average that meets a tolerance, and its export."""

from __future__ import annotations

import argparse
import time

from ase_symdiag.cli.common import add_model_structures, output_file, positive_float
from ase_symdiag.cli.spectrum import lmax_type, measure_spectra


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "symmetrize",
        help="choose the cheapest rotational average that meets a tolerance, and export it",
        description=(
            "Measure the symmetry-breaking spectrum of MODEL on STRUCTURES, pick the O(3) "
            "quadrature with the fewest operations whose leftover RMS force breaking is "
            "below the tolerance, print the choice, why, and its cost, and optionally "
            "export the symmetrized model as a metatomic TorchScript file."
        ),
    )
    add_model_structures(p, variant=True)
    p.add_argument("--lmax", type=lmax_type, default=3, help="largest lambda measured (default 3)")
    p.add_argument("--tolerance", type=positive_float, default=None, help="leftover RMS force breaking, eV/Å")
    p.add_argument(
        "--relative-tolerance", type=positive_float, default=0.01,
        help="tolerance as a fraction of the RMS force when --tolerance is not given (default 0.01)",
    )
    p.add_argument("--quadrature", default=None, help="skip the choice and use this quadrature (e.g. 3, O, lebedev:3)")
    p.add_argument("--export", metavar="OUT.pt", type=output_file, help="write the symmetrized model")
    p.add_argument(
        "--corrected", action="store_true",
        help="also give the export net-force/torque-free direct forces and a symmetric direct stress "
        "(for LAMMPS 'non_conservative on')",
    )
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the choice as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ase_symdiag.cli.common import load_handle
    from ase_symdiag.metrics.adaptive import choose_quadrature
    from ase_symdiag.metrics.symmetrize import resolve_quadrature, symmetrized_prediction
    from ase_symdiag.report import format_table, write_json
    from ase_symdiag.structures import read_structures

    handle = load_handle(args)
    structures = read_structures(args.structures, index=args.index)
    data = {"model": handle.source}
    if args.quadrature is not None:
        quadrature = resolve_quadrature(args.quadrature)
        print(f"using quadrature '{quadrature.name}' ({quadrature.size} operations, degree {quadrature.degree})")
    else:
        spectra = measure_spectra(args, handle, structures)
        choice = choose_quadrature(spectra, args.tolerance, relative_tolerance=args.relative_tolerance)
        quadrature = choice.quadrature
        print(format_table(
            ["quadrature", "operations", "degree", "residual eV/A", "residual/tolerance"],
            [
                [c["quadrature"], c["operations"], c["degree"], c["residual_eV_per_A"], c["worst_ratio_to_tolerance"]]
                for c in choice.candidates
            ],
        ))
        print(f"chosen: {choice.reason}")
        print(f"cost: {quadrature.size} model evaluations per step ({choice.saving:.1f}x fewer than the default {choice.default_size})")
        data["choice"] = choice.to_dict()
    start = time.perf_counter()
    symmetrized_prediction(handle, structures[0], quadrature, batch_size=args.batch_size)
    elapsed = time.perf_counter() - start
    print(f"measured: {elapsed * 1000:.1f} ms per symmetrized evaluation of {structures[0].label} ({len(structures[0])} atoms)")
    data["seconds_per_step"] = elapsed
    if args.export:
        from ase_symdiag.backends.metatomic.export import export_corrected, export_symmetrized

        if args.corrected:
            export_corrected(handle.model, args.export, quadrature=quadrature, batch_size=args.batch_size)
        else:
            export_symmetrized(handle.model, quadrature, args.export, batch_size=args.batch_size)
        print(f"symmetrized model written to {args.export}")
        data["export"] = args.export
    if args.json:
        write_json(args.json, data)
    return 0
