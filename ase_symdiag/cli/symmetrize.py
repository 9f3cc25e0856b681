"""``ase-symdiag symmetrize``: the cheapest average that meets a tolerance, and its export."""

from __future__ import annotations

import argparse
import time

from ase_symdiag.cli.common import (
    add_model_structures, check_orientations, check_outputs, lmax_type, output_file, positive_float, show_progress,
)
from ase_symdiag.metrics.adaptive import DEFAULT_ENERGY_TOLERANCE, DEFAULT_STRESS_TOLERANCE
from ase_symdiag.metrics.spectrum import N_CHECK


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "symmetrize",
        help="choose the cheapest rotational average that meets a tolerance, and export it",
        description=(
            "Measure the symmetry-breaking spectrum of MODEL on STRUCTURES, pick the O(3) "
            "quadrature with the fewest operations whose leftover breaking meets the "
            "tolerance of every output (energy per atom, forces, stress of periodic "
            "structures), print the choice, which output decided it, and its cost, and "
            "optionally export the symmetrized model as a metatomic TorchScript file. "
            "Leftover breaking is an RMS over orientations of the averaged prediction "
            "(not a maximum); breaking above --lmax (unresolved) counts in full. If no "
            "quadrature can be shown to meet a tolerance, the output says 'tolerance NOT "
            "met', no claim is made and the exit status is 1."
        ),
    )
    add_model_structures(p, variant=True)
    p.add_argument("--lmax", type=lmax_type, default=3, help="largest lambda measured (default 3)")
    p.add_argument(
        "--tolerance", type=positive_float, default=None,
        help="leftover force breaking, eV/Å: RMS over orientations, atoms and x, y, z (per component)",
    )
    p.add_argument(
        "--relative-tolerance", type=positive_float, default=0.01,
        help="force tolerance as a fraction of each structure's RMS force component, at least 1 meV/Å "
        "(as check's relative error), when --tolerance is not given (default 0.01)",
    )
    p.add_argument(
        "--energy-tolerance", type=positive_float, default=DEFAULT_ENERGY_TOLERANCE,
        help=f"leftover energy breaking, meV/atom, RMS over orientations (default {DEFAULT_ENERGY_TOLERANCE})",
    )
    p.add_argument(
        "--stress-tolerance", type=positive_float, default=DEFAULT_STRESS_TOLERANCE,
        help=f"leftover stress breaking of periodic structures, GPa, RMS over orientations of the Frobenius "
        f"norm (default {DEFAULT_STRESS_TOLERANCE})",
    )
    p.add_argument(
        "--check-orientations", type=check_orientations, default=N_CHECK,
        help=f"Haar-random orientations per structure measuring the breaking above --lmax (default {N_CHECK})",
    )
    p.add_argument("--quadrature", default=None, help="skip the choice and use this quadrature (e.g. 3, O, lebedev:3)")
    p.add_argument("--export", metavar="OUT.pt", type=output_file, help="write the symmetrized model")
    p.add_argument(
        "--corrected", action="store_true",
        help="also give the export net-force/torque-free direct forces and a symmetric direct stress "
        "(for LAMMPS 'non_conservative on'); the direct forces and stress then meet the force and stress "
        "tolerances too",
    )
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the choice as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ase_symdiag.cli.common import load_handle, model_name, require_metatomic
    from ase_symdiag.drivers.spectrum import measure_spectra
    from ase_symdiag.drivers.symmetrize import symmetrized_prediction
    from ase_symdiag.metrics.adaptive import choose_quadrature
    from ase_symdiag.o3.quadrature import resolve_quadrature
    from ase_symdiag.report import write_json
    from ase_symdiag.structures import read_structures

    check_outputs({"--export": args.export, "--json": args.json}, {"model": args.model, "structures": args.structures, "extensions folder": args.extensions})
    quadrature = resolve_quadrature(args.quadrature)  # a bad --quadrature is one line before any work
    handle = load_handle(args)
    structures = read_structures(args.structures, index=args.index)
    if args.export:  # before any work: exports are TorchScript metatomic models
        require_metatomic(handle, "--export")
    data = {"model": model_name(handle)}
    status = 0
    if quadrature is not None:
        print(f"using quadrature '{quadrature.name}' ({quadrature.size} operations, degree {quadrature.degree})")
    else:
        spectra = measure_spectra(
            handle, structures, lmax=args.lmax, batch_size=args.batch_size, n_check=args.check_orientations,
            progress=show_progress(args.quiet),
        )
        outputs = ("energy", "forces", "stress") + (("direct_forces", "direct_stress") if args.corrected else ())
        choice = choose_quadrature(
            spectra, args.tolerance, relative_tolerance=args.relative_tolerance,
            energy_tolerance=args.energy_tolerance, stress_tolerance=args.stress_tolerance, outputs=outputs,
        )
        quadrature = choice.quadrature
        print(choice_tables(choice))
        print(f"chosen: {choice.reason}" if choice.met else choice.reason)
        if choice.met:
            print(f"cost: {quadrature.size} model evaluations per step ({choice.saving:.1f}x fewer than the default {choice.default_size})")
        else:
            print(f"cost: {quadrature.size} model evaluations per step (no tolerance is claimed for it)")
        data["choice"] = choice.to_dict()
        status = 0 if choice.met else 1
    start = time.perf_counter()
    symmetrized_prediction(handle, structures[0], quadrature, batch_size=args.batch_size)
    elapsed = time.perf_counter() - start
    print(f"measured: {elapsed * 1000:.1f} ms per symmetrized evaluation of {structures[0].label} ({len(structures[0])} atoms)")
    data["seconds_per_step"] = elapsed
    if args.export:
        from ase_symdiag.backends.metatomic.corrected import export_corrected
        from ase_symdiag.backends.metatomic.export import export_symmetrized

        from ase_symdiag.backends.metatomic.export import dropped_outputs

        # the handle: the export runs in, and declares, the --dtype it was loaded in
        if args.corrected:
            exported = export_corrected(handle, args.export, quadrature=quadrature, batch_size=args.batch_size)
        else:
            exported = export_symmetrized(handle, args.export, quadrature=quadrature, batch_size=args.batch_size)
        print(f"symmetrized model written to {args.export}")
        carried = list(exported.capabilities().outputs.keys())
        dropped = dropped_outputs(list(handle.model.capabilities().outputs.keys()), carried)
        print(f"outputs: {', '.join(carried)}")
        data["exported_outputs"] = carried
        for name, reason in dropped.items():
            print(f"not carried over: {name} ({reason})")
        data["dropped_outputs"] = dropped
        data["export"] = args.export
    if args.json:
        write_json(args.json, data)
    return status


def choice_tables(choice) -> str:
    """The candidates (leftover breaking per output) and the per-output verdicts."""
    from ase_symdiag.report import format_table

    verdicts = list(choice.outputs.values())
    candidates = format_table(
        ["quadrature", "operations", "degree"] + [f"{v.output} {v.unit}" for v in verdicts] + ["worst/tolerance", "worst output"],
        [
            [c["quadrature"], c["operations"], c["degree"]]
            + [c[f"residual_{v.key}"] for v in verdicts]
            + [c["worst_ratio_to_tolerance"], c["decisive_output"]]
            for c in choice.candidates
        ],
    )
    outputs = format_table(
        ["output", "unit", "tolerance", f"left by {choice.quadrature.name}", f"of which >{choice.lmax}", "ratio", "cheapest alone", "met"],
        [
            [v.output, v.unit, v.tolerance, v.residual, v.unresolved, v.ratio, v.cheapest or "none", "yes" if v.met else "NO"]
            for v in verdicts
        ],
    )
    return (
        "leftover breaking of the averaged prediction: RMS over orientations (not a maximum), worst structure;\n"
        "energy per atom, forces per component (over atoms and x, y, z), stress Frobenius; "
        f"breaking above lambda={choice.lmax} (unresolved) counted in full\n"
        + candidates + "\n\n" + outputs
    )
