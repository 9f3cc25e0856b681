"""``ase-symdiag uncertainty``: does the rotational spread say where the model is wrong?"""

from __future__ import annotations

import argparse

from ase_symdiag.cli.common import add_model_structures, output_file, plot_file, quadrature_spec, write_outputs


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "uncertainty",
        help="rotational spread as an uncertainty: rank correlation, coverage and calibration against reference errors",
        description=(
            "Evaluate MODEL on STRUCTURES (held-out data with reference energies and forces "
            "stored in the file) unrotated and over a quadrature; compare the error of the "
            "prediction with the rotational spread (energy_std, forces_std): Spearman rank "
            "correlation per structure and per atom, fraction of errors within 1, 2, 3 "
            "standard deviations and a calibration curve. The model's own energy_uncertainty "
            "output (e.g. metatrain's LLPR) is measured alongside when it has one."
        ),
    )
    add_model_structures(p, variant=True)
    p.add_argument("--quadrature", type=quadrature_spec, default="lebedev:2",
                   help="operations of the spread (default lebedev:2, metatomic-ase's SymmetrizedCalculator l_max=2)")
    p.add_argument("--prediction", choices=["raw", "symmetrized"], default="raw",
                   help="whose error: the unrotated model's (default) or the symmetrized mean's")
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the measures and per-structure values as JSON")
    p.add_argument("--plot", metavar="OUT.png", type=plot_file, help="calibration plot")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ase_symdiag.cli.common import load_handle
    from ase_symdiag.drivers.uncertainty import rotational_uncertainty
    from ase_symdiag.metrics.uncertainty import reference_values
    from ase_symdiag.plots import plot_calibration
    from ase_symdiag.structures import from_atoms_list, read_atoms

    images = read_atoms(args.structures, index=args.index)
    structures = from_atoms_list(images)
    references = [reference_values(atoms) for atoms in images]
    report = rotational_uncertainty(
        load_handle(args), structures, [e for e, _ in references], [f for _, f in references],
        quadrature=args.quadrature, prediction=args.prediction, batch_size=args.batch_size,
    )
    print(report.table())
    write_outputs(args, report.to_dict, "measures", lambda path: plot_calibration(report, path), "calibration plot")
    return 0
