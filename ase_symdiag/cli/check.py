"""``ase-symdiag check``: the equivariance gate (exit 1 when a threshold is exceeded).

The gate never passes what it did not measure: a NaN value fails its threshold
(non-finite model outputs are already an error, exit 2, before any table), and a
threshold on an output no structure has (``--max-stress-error`` without a fully
periodic structure, ``--max-direct-force-error`` for a model without direct forces
or with ``--no-direct``) is a usage error, exit 2.

Every output the model gives can be gated. The model's direct (non-conservative)
forces and stress are gated by ``--max-direct-*``, which default to the matching
conservative threshold: ``--max-force-error 0.01`` gates both force heads (a model
whose direct head is broken no longer passes a force gate). An inherited threshold
applies where the model has the direct output and is skipped where it does not.
"""

from __future__ import annotations

import argparse
import sys

from ase_symdiag.cli.common import (
    add_model_structures,
    check_outputs,
    load_handle,
    nonnegative_float,
    nonnegative_int,
    output_file,
    positive_int,
    show_progress,
    usage,
)

#: (option, summary key, what, unit, the option whose value it takes by default) of
#: every gate threshold
THRESHOLDS = [
    ("max_force_error", "force_rms_per_component_eV_per_A", "RMS force error (per component)", "eV/Å", None),
    ("max_relative_force_error", "force_rms_per_component_relative", "relative force error", "", None),
    ("max_energy_error", "energy_max_meV_per_atom", "energy error", "meV/atom", None),
    ("max_stress_error", "stress_max_GPa", "stress error", "GPa", None),
    (
        "max_direct_force_error", "direct_force_rms_per_component_eV_per_A",
        "RMS direct force error (per component)", "eV/Å", "max_force_error",
    ),
    (
        "max_relative_direct_force_error", "direct_force_rms_per_component_relative",
        "relative direct force error", "", "max_relative_force_error",
    ),
    ("max_direct_stress_error", "direct_stress_max_GPa", "direct stress error", "GPa", "max_stress_error"),
]

#: what a threshold needs when no structure has its output
_MISSING = {
    "stress": "stress needs a structure periodic in all directions",
    "direct": "the model has no such direct (non-conservative) output, or --no-direct was given",
}


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
    p.add_argument("--no-inversion", action="store_true",
                   help="only proper rotations, no rotation times inversion (for chiral models)")
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
    p.add_argument(
        "--max-direct-force-error", type=nonnegative_float, metavar="X",
        help="as --max-force-error, for the model's direct (non-conservative) forces (default: --max-force-error)",
    )
    p.add_argument(
        "--max-relative-direct-force-error", type=nonnegative_float, metavar="X",
        help="as --max-relative-force-error, for the direct forces (default: --max-relative-force-error)",
    )
    p.add_argument(
        "--max-direct-stress-error", type=nonnegative_float, metavar="X",
        help="as --max-stress-error, for the direct stress (default: --max-stress-error)",
    )
    p.set_defaults(run=run)


def gate_limits(args: argparse.Namespace) -> dict:
    """``{option: (limit, explicit)}`` of every threshold that applies: given, or
    inherited from the matching conservative threshold (``explicit`` False)."""
    limits = {}
    for option, _, _, _, default in THRESHOLDS:
        limit = getattr(args, option, None)
        if limit is not None:
            limits[option] = (limit, True)
        elif default is not None and getattr(args, default, None) is not None:
            limits[option] = (getattr(args, default), False)
    return limits


def gate_failures(summary: dict, args: argparse.Namespace) -> tuple:
    """(thresholds applied, one message per exceeded threshold).

    A NaN value fails (``not value <= limit``); a threshold given for an output no
    structure has raises :class:`~ase_symdiag.errors.UsageError`: it was not measured.
    An inherited direct threshold (:func:`gate_limits`) is skipped where the output is
    absent.
    """
    failures, thresholds = [], {}
    limits = gate_limits(args)
    for option, key, what, unit, default in THRESHOLDS:
        if option not in limits:
            continue
        limit, explicit = limits[option]
        value = summary[key]
        flag = "--" + option.replace("_", "-")
        if value is None:
            if not explicit:
                continue
            reason = _MISSING["direct" if "direct" in option else "stress"]
            raise usage(f"{flag}: no structure has this output ({reason})")
        thresholds[key] = limit
        if not value <= limit:
            given = "" if explicit else f" (from --{default.replace('_', '-')})"
            failures.append(f"{what} {value:.3g} {unit} exceeds {flag} {limit:g}{given}".replace("  ", " "))
    return thresholds, failures


def check_measurable(args: argparse.Namespace, structures, model) -> None:
    """Refuse, before any evaluation, a threshold given for an output that will not be
    measured (no fully periodic structure, no direct head, ``--no-direct``). A model
    that does not declare its direct heads (not a metatomic model) is checked after
    the evaluation instead (:func:`gate_failures`)."""
    periodic = any(s.periodic for s in structures)
    direct_forces = getattr(model, "has_direct_forces", None)
    direct_stress = getattr(model, "has_direct_stress", None)
    has = {
        "max_stress_error": periodic,
        "max_direct_force_error": direct_forces is None or (direct_forces and not args.no_direct),
        "max_relative_direct_force_error": direct_forces is None or (direct_forces and not args.no_direct),
        "max_direct_stress_error": periodic and (direct_stress is None or (direct_stress and not args.no_direct)),
    }
    if args.no_direct:
        has.update({k: False for k in has if "direct" in k})
    for option, measured in has.items():
        if getattr(args, option) is None or measured:
            continue
        flag = "--" + option.replace("_", "-")
        if "stress" in option and not periodic:
            raise usage(f"{flag}: no structure is periodic in all directions, so no stress is measured")
        raise usage(f"{flag}: not measured: {_MISSING['direct']}")


def equigrad_line(results) -> str:
    """One line: the largest |dE/dθ| (docs/methods.md §8) and how it was computed."""
    worst = max(results, key=lambda r: r.norm)
    how = worst.method + (f", step {worst.step:g} rad" if worst.step else "")
    return (
        f"equigrad |dE/dtheta| (energy derivative under an infinitesimal rotation): worst "
        f"{worst.norm:.3g} eV/rad ({worst.label}; {how})"
    )


def run(args: argparse.Namespace) -> int:
    from ase_symdiag.drivers.equigrad import equigrad
    from ase_symdiag.metrics.equigrad import report_dict
    from ase_symdiag.drivers.equivariance import check_equivariance
    from ase_symdiag.report import write_json
    from ase_symdiag.structures import read_structures

    check_outputs({"--json": args.json}, {"model": args.model, "structures": args.structures, "extensions folder": args.extensions})
    structures = read_structures(args.structures, index=args.index)
    model = load_handle(args)
    check_measurable(args, structures, model)
    report = check_equivariance(
        model,
        structures,
        n_rotations=args.rotations,
        seed=args.seed,
        include_inversion=not args.no_inversion,
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
