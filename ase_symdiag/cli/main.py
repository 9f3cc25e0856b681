"""Command line: ``ase-symdiag <command> ...`` (``ase-symdiag <command> --help``).

Exit codes: 0 success, 1 a requested threshold was exceeded, 2 bad input.
Errors print one line; ``--traceback`` shows the full Python traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import List, Optional

from ase_symdiag.cli import md
from ase_symdiag.cli import history, train


class CLIError(Exception):
    """A usage problem reported in one line."""


def _add_check(subparsers) -> None:
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
    p.add_argument("model", help="metatomic model file (.pt)")
    p.add_argument("structures", help="any ASE-readable file (extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default=":", help="ASE index of the structures to read (default ':')")
    p.add_argument("-n", "--rotations", type=int, default=8, help="number of random O(3) operations (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rotation sampler (default 0)")
    p.add_argument("--proper-only", action="store_true", help="only proper rotations (for chiral models)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: model's first available)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's")
    p.add_argument("--batch-size", type=int, default=16, help="rotated copies per model call (default 16)")
    p.add_argument("--no-direct", action="store_true", help="skip the model's non-conservative outputs")
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.add_argument("--max-force-error", type=float, metavar="X", help="fail if any RMS force error > X eV/Å")
    p.add_argument("--max-relative-force-error", type=float, metavar="X", help="fail if any RMS force error / RMS force > X")
    p.add_argument("--max-energy-error", type=float, metavar="X", help="fail if any |dE| > X meV/atom")
    p.add_argument("--max-stress-error", type=float, metavar="X", help="fail if any ||dS|| > X GPa")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_check)


def _run_check(args) -> int:
    from ase_symdiag.metrics.equivariance import check_equivariance
    from ase_symdiag.report import write_json
    from ase_symdiag.structures import read_structures

    structures = read_structures(args.structures, index=args.index)
    report = check_equivariance(
        args.model,
        structures,
        n_rotations=args.rotations,
        seed=args.seed,
        improper=not args.proper_only,
        direct=not args.no_direct,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(report.table())
    summary = report.summary()
    failures = []
    checks = [
        ("max_force_error", "force_rms_eV_per_A", "RMS force error", "eV/Å"),
        ("max_relative_force_error", "force_relative", "relative force error", ""),
        ("max_energy_error", "energy_max_meV_per_atom", "energy error", "meV/atom"),
        ("max_stress_error", "stress_max_GPa", "stress error", "GPa"),
    ]
    thresholds = {}
    for option, key, what, unit in checks:
        limit = getattr(args, option)
        if limit is None:
            continue
        thresholds[key] = limit
        value = summary[key]
        if value is not None and value > limit:
            failures.append(f"{what} {value:.3g} {unit} exceeds --{option.replace('_', '-')} {limit:g}".replace("  ", " "))
    if args.json:
        data = report.to_dict()
        data["thresholds"] = thresholds
        data["passed"] = not failures
        write_json(args.json, data)
        print(f"report written to {args.json}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _add_reference_model(subparsers) -> None:
    p = subparsers.add_parser(
        "reference-model",
        help="write an analytic metatomic model (exactly equivariant or with planted breaking)",
        description=(
            "Write a smooth Morse pair potential as a metatomic TorchScript model. It is "
            "exactly O(3)-equivariant unless --quadrupole (a planted lambda=2 energy term, "
            "eV/Å^2) or --direct-bias (a planted lambda=1 term in the direct forces, eV/Å) "
            "is given."
        ),
    )
    p.add_argument("output", help="where to write the .pt file")
    p.add_argument("--quadrupole", type=float, default=0.0, help="planted lambda=2 amplitude kappa, eV/Å^2")
    p.add_argument("--axis", type=float, nargs=3, default=(0.0, 0.0, 1.0), help="axis of the planted term")
    p.add_argument("--direct", action="store_true", help="add non-conservative force/stress outputs")
    p.add_argument("--direct-bias", type=float, nargs=3, default=(0.0, 0.0, 0.0), help="planted direct-force vector, eV/Å")
    p.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius, Å (default 5)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.set_defaults(run=_run_reference_model)


def _run_reference_model(args) -> int:
    from ase_symdiag.reference.analytic import export_pair_potential

    direct = args.direct or any(b != 0.0 for b in args.direct_bias)
    export_pair_potential(
        args.output,
        dtype=args.dtype,
        quadrupole=args.quadrupole,
        axis=args.axis,
        direct=direct,
        direct_bias=args.direct_bias,
        cutoff=args.cutoff,
    )
    print(f"wrote {args.output}")
    return 0


def _spectra(args, handle, structures):
    from ase_symdiag.metrics.spectrum import structure_spectrum

    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(desc="spectrum", unit="structure", total=len(structures), leave=False)
    spectra = []
    for structure in structures:
        spectrum, _ = structure_spectrum(handle, structure, lmax=args.lmax, batch_size=args.batch_size)
        spectra.append(spectrum)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return spectra


def _add_common(p) -> None:
    p.add_argument("model", help="metatomic model file (.pt)")
    p.add_argument("structures", help="any ASE-readable file (extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default=":", help="ASE index of the structures to read (default ':')")
    p.add_argument("--device", default=None, help="cpu or cuda (default: model's first available)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's")
    p.add_argument("--batch-size", type=int, default=16, help="rotated copies per model call (default 16)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_spectrum(subparsers) -> None:
    p = subparsers.add_parser(
        "spectrum",
        help="decompose the symmetry breaking into O(3) channels (lambda, parity)",
        description=(
            "For each structure, evaluate MODEL on a quadrature exact to degree 2*LMAX, "
            "back-rotate energy, forces and stress, and split their variance over O(3) "
            "into angular channels lambda <= LMAX of even (+) and odd (-) parity. Prints "
            "the RMS amplitude per channel; '>L' is what lies above LMAX."
        ),
    )
    _add_common(p)
    p.add_argument("--lmax", type=int, default=3, help="largest lambda resolved (default 3)")
    p.add_argument("--json", metavar="OUT", help="write the spectra as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot RMS amplitude against lambda")
    p.set_defaults(run=_run_spectrum)


def _run_spectrum(args) -> int:
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.report import write_json
    from ase_symdiag.metrics.spectrum import plot_spectra, spectrum_table
    from ase_symdiag.structures import read_structures

    handle = ModelHandle.load(args.model, device=args.device, dtype=args.dtype)
    structures = read_structures(args.structures, index=args.index)
    spectra = _spectra(args, handle, structures)
    print(spectrum_table(spectra))
    if args.json:
        write_json(args.json, {"model": handle.source, "spectra": [s.to_dict() for s in spectra]})
        print(f"spectra written to {args.json}")
    if args.plot:
        plot_spectra(spectra, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def _add_symmetrize(subparsers) -> None:
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
    _add_common(p)
    p.add_argument("--lmax", type=int, default=3, help="largest lambda measured (default 3)")
    p.add_argument("--tolerance", type=float, default=None, help="leftover RMS force breaking, eV/Å")
    p.add_argument(
        "--relative-tolerance", type=float, default=0.01,
        help="tolerance as a fraction of the RMS force when --tolerance is not given (default 0.01)",
    )
    p.add_argument("--quadrature", default=None, help="skip the choice and use this quadrature (e.g. 3, O, lebedev:3)")
    p.add_argument("--export", metavar="OUT.pt", help="write the symmetrized model")
    p.add_argument(
        "--corrected", action="store_true",
        help="also give the export net-force/torque-free direct forces and a symmetric direct stress "
        "(for LAMMPS 'non_conservative on')",
    )
    p.add_argument("--json", metavar="OUT", help="write the choice as JSON")
    p.set_defaults(run=_run_symmetrize)


def _run_symmetrize(args) -> int:
    import time

    from ase_symdiag.metrics.adaptive import choose_quadrature
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.report import format_table, write_json
    from ase_symdiag.structures import read_structures
    from ase_symdiag.metrics.symmetrize import resolve_quadrature, symmetrized_prediction

    handle = ModelHandle.load(args.model, device=args.device, dtype=args.dtype)
    structures = read_structures(args.structures, index=args.index)
    data = {"model": handle.source}
    if args.quadrature is not None:
        try:
            quadrature = resolve_quadrature(args.quadrature)
        except ValueError as error:
            raise CLIError(str(error)) from None
        print(f"using quadrature '{quadrature.name}' ({quadrature.size} operations, degree {quadrature.degree})")
    else:
        spectra = _spectra(args, handle, structures)
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


def _add_representations(subparsers) -> None:
    p = subparsers.add_parser(
        "representations",
        help="how much of each internal layer is invariant, and in which O(3) channels the rest lives",
        description=(
            "Character-project the per-atom feature outputs of MODEL (e.g. 'mtt::features::layer0', "
            "metatrain's 'mtt::features::*', 'feature') as functions of the structure's orientation, "
            "and print for each layer the fraction of its mean square in each (lambda, parity) "
            "channel; 'invariant' is the (0, +) fraction."
        ),
    )
    _add_common(p)
    p.add_argument("--layers", nargs="+", default=None, help="feature outputs (or suffixes, e.g. layer0); default: all")
    p.add_argument("--lmax", type=int, default=3, help="largest lambda resolved (default 3)")
    p.add_argument("--compare", metavar="MODEL2", default=None, help="a second model shown side by side")
    p.add_argument("--json", metavar="OUT", help="write the fractions as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="heat map of layer x channel fractions")
    p.set_defaults(run=_run_representations)


def _run_representations(args) -> int:
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.report import write_json
    from ase_symdiag.metrics.representations import plot_representations, representation_content
    from ase_symdiag.structures import read_structures

    structures = read_structures(args.structures, index=args.index)
    reports = {}
    for path in [args.model] + ([args.compare] if args.compare else []):
        handle = ModelHandle.load(path, device=args.device, dtype=args.dtype)
        report = representation_content(handle, structures, layers=args.layers, lmax=args.lmax, batch_size=args.batch_size)
        print(f"model {path}")
        print(report.table())
        reports[path] = report
    if args.json:
        write_json(args.json, {path: report.to_dict() for path, report in reports.items()})
        print(f"fractions written to {args.json}")
    if args.plot:
        plot_representations({os.path.basename(p): r for p, r in reports.items()}, args.plot)
        print(f"heat map written to {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ase-symdiag",
        description="Rotational-symmetry diagnostics for machine-learned interatomic potentials.",
    )
    parser.add_argument("-T", "--traceback", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    subparsers.required = True
    for add in COMMANDS:
        add(subparsers)
    return parser


def _add_compare(subparsers) -> None:
    from ase_symdiag.compare import add_compare_cli

    add_compare_cli(subparsers)


def _add_pointcloud(subparsers) -> None:
    from ase_symdiag.pointcloud.diagnostics import add_pointcloud_cli

    add_pointcloud_cli(subparsers)


COMMANDS = [
    _add_check,
    _add_spectrum,
    _add_symmetrize,
    _add_representations,
    _add_compare,
    md.add_parser,
    train.add_parser,  # train, export
    history.add_parser,  # training-history
    _add_pointcloud,
    _add_reference_model,
]


def main(argv: Optional[List[str]] = None) -> int:
    from ase_symdiag.errors import SymDiagError

    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # torch >= 2.10 deprecates TorchScript, which metatomic models are made of
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.*")
        try:
            return int(args.run(args))
        except (SymDiagError, CLIError, FileNotFoundError) as error:
            if args.traceback:
                raise
            print(f"ase-symdiag {args.command}: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"ase-symdiag {args.command}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
