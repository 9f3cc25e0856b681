"""``ase-symdiag check``: the equivariance gate (exit 1 when a threshold is exceeded).

The gate never passes what it did not measure: a NaN value fails its threshold
(non-finite model outputs are already an error, exit 2, before any table), and a
threshold on an output no structure has (``--max-stress-error`` without a fully
periodic structure) is a usage error, exit 2.
"""

from __future__ import annotations

import argparse
import sys

from ase_symdiag.cli.common import (
    add_model_structures,
    load_handle,
    nonnegative_float,
    nonnegative_int,
    output_file,
    positive_int,
    show_progress,
    usage,
)

#: (option, summary key, what, unit) of every gate threshold
THRESHOLDS = [
    ("max_force_error", "force_rms_per_component_eV_per_A", "RMS force error (per component)", "eV/Å"),
    ("max_relative_force_error", "force_rms_per_component_relative", "relative force error", ""),
    ("max_energy_error", "energy_max_meV_per_atom", "energy error", "meV/atom"),
    ("max_stress_error", "stress_max_GPa", "stress error", "GPa"),
]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="check that energy, forces and stress transform correctly under O(3)",
        description=(
            "Evaluate MODEL on every structure of STRUCTURES and on copies rotated by "
            "random O(3) operations (half of them improper), and report the energy "
            "invariance error and the force/stress equivariance errors. Exits with 1 "
            "when a --max-* threshold is exceeded, so it can gate a production run."
        ),
    )
    add_model_structures(p, batch=False, variant=True)
    p.add_argument("-n", "--rotations", type=positive_int, default=8, help="number of random O(3) operations (default 8)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the rotation sampler (default 0)")
    p.add_argument("--proper-only", action="store_true", help="only proper rotations (for chiral models)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="rotated copies per model call (default 16)")
    p.add_argument("--no-direct", action="store_true", help="skip the model's non-conservative outputs")
    p.add_argument("--json", metavar="OUT", type=output_file, help="write the full report as JSON")
    p.add_argument(
        "--max-force-error", type=nonnegative_float, metavar="X",
        help="fail if any RMS force error (per component, over atoms and x, y, z) > X eV/Å",
    )
    p.add_argument(
        "--max-relative-force-error", type=nonnegative_float, metavar="X",
        help="fail if any RMS force error / max(RMS force, 1 meV/Å) > X (both per component)",
    )
    p.add_argument("--max-energy-error", type=nonnegative_float, metavar="X", help="fail if any |dE| > X meV/atom")
    p.add_argument("--max-stress-error", type=nonnegative_float, metavar="X", help="fail if any ||dS|| > X GPa")
    p.set_defaults(run=run)


def gate_failures(summary: dict, args: argparse.Namespace) -> tuple:
    """(thresholds asked for, one message per exceeded threshold).

    A NaN value fails (``not value <= limit``); a threshold whose output no structure
    has raises :class:`~ase_symdiag.errors.UsageError`: it was not measured.
    """
    failures, thresholds = [], {}
    for option, key, what, unit in THRESHOLDS:
        limit = getattr(args, option)
        if limit is None:
            continue
        thresholds[key] = limit
        value = summary[key]
        flag = "--" + option.replace("_", "-")
        if value is None:
            raise usage(f"{flag}: no structure has this output (stress needs a structure periodic in all directions)")
        if not value <= limit:
            failures.append(f"{what} {value:.3g} {unit} exceeds {flag} {limit:g}".replace("  ", " "))
    return thresholds, failures


def equigrad_line(results) -> str:
    """One line: the largest |dE/dθ| (docs/methods.md §8) and how it was computed."""
    worst = max(results, key=lambda r: r.norm)
    how = worst.method + (f", step {worst.step:g} rad" if worst.step else "")
    return (
        f"equigrad |dE/dtheta| (energy derivative under an infinitesimal rotation): worst "
        f"{worst.norm:.3g} eV/rad ({worst.label}; {how})"
    )


def run(args: argparse.Namespace) -> int:
    from ase_symdiag.metrics.equigrad import equigrad, report_dict
    from ase_symdiag.metrics.equivariance import check_equivariance
    from ase_symdiag.report import write_json
    from ase_symdiag.structures import read_structures

    structures = read_structures(args.structures, index=args.index)
    if args.max_stress_error is not None and not any(s.periodic for s in structures):
        raise usage("--max-stress-error: no structure is periodic in all directions, so no stress is measured")
    model = load_handle(args)
    report = check_equivariance(
        model,
        structures,
        n_rotations=args.rotations,
        seed=args.seed,
        improper=not args.proper_only,
        direct=not args.no_direct,
        batch_size=args.batch_size,
        progress=show_progress(args.quiet),
    )
    thresholds, failures = gate_failures(report.summary(), args)
    print(report.table())
    rotational = equigrad(model, structures)
    print(equigrad_line(rotational))
    if args.json:
        data = report.to_dict()
        data["equigrad"] = report_dict(rotational)
        data["thresholds"] = thresholds
        data["passed"] = not failures
        write_json(args.json, data)
        print(f"report written to {args.json}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0
