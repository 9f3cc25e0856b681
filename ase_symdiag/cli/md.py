"""``ase-symdiag md``: MD stability run of raw, symmetrized and corrected variants of a model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ase_symdiag.cli.common import (
    MODEL_HELP,
    add_model_options,
    check_outputs,
    load_handle,
    nonnegative_float,
    nonnegative_int,
    output_directory,
    positive_float,
    positive_int,
    quadrature_spec,
    require_metatomic,
)


def add_parser(subparsers: Any) -> None:
    """Register ``md`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "md",
        help="MD stability run of raw, symmetrized and corrected variants of a model",
        description=(
            "Run the same molecular dynamics (same start, same velocities) with each "
            "variant of MODEL: raw, symmetrized (rotational average over a quadrature) "
            "and corrected (net force/torque removed). Records energies, temperature, "
            "momenta, pressure, minimum distance and maximum force; stops a variant at "
            "the first failure (atoms too close, exploding or non-finite forces, energy "
            "jump in NVE). Writes per-variant trajectories, logs and JSON summaries, and "
            "one plot, to --out; --resume continues an interrupted run."
        ),
    )
    p.add_argument("model", help=MODEL_HELP + " (non-metatomic models: --engine torchsim)")
    p.add_argument("structure", help="any ASE-readable file (extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default="0", help="ASE index of the structure to read (default 0)")
    p.add_argument("--variants", default="raw,symmetrized", help="comma-separated: raw, symmetrized, corrected (and stochastic with --engine torchsim); default raw,symmetrized")
    p.add_argument("--ensemble", choices=["nve", "nvt"], default="nve")
    p.add_argument("--thermostat", choices=["langevin", "bussi"], default="langevin", help="for NVT (default langevin)")
    p.add_argument("--friction", type=nonnegative_float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--taut", type=positive_float, default=100.0, help="Bussi time constant, fs (default 100)")
    p.add_argument("--steps", type=nonnegative_int, default=1000, help="number of MD steps (default 1000)")
    p.add_argument("--timestep", type=positive_float, default=1.0, help="fs (default 1)")
    p.add_argument("--temperature", type=nonnegative_float, default=300.0, help="K: initial velocities and NVT target (default 300)")
    p.add_argument("--interval", type=positive_int, default=1, help="record every N steps (default 1)")
    p.add_argument(
        "--quadrature", type=md_quadrature, default=3,
        help="quadrature of the symmetrized variant (default 3); 'adaptive' (--engine torchsim): the cheapest "
             "meeting the tolerance on the model's measured breaking, with a warning when none does",
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="rotated copies per model call (default 16)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the velocities and the thermostat (default 0)")
    p.add_argument("--min-distance", type=nonnegative_float, default=0.5, help="failure below this distance, Å (default 0.5)")
    p.add_argument("--max-force", type=positive_float, default=50.0, help="failure above this force, eV/Å (default 50)")
    p.add_argument("--max-energy-jump", type=positive_float, default=0.05, help="NVE failure above this |dE| between records, eV/atom (default 0.05)")
    p.add_argument("--checkpoint-every", type=positive_int, default=100, help="write the resume state every N steps (default 100)")
    p.add_argument("--out", required=True, type=output_directory, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    p.add_argument("--device", default=None, help="cpu or cuda (default: model's first available)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's")
    add_model_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    group = p.add_argument_group("batched engine (--engine torchsim)")
    group.add_argument(
        "--engine", choices=["ase", "torchsim"], default="ase",
        help="ase: one run per variant in an ASE loop (default); torchsim: replicas x temperatures batched per variant",
    )
    group.add_argument("--replicas", type=positive_int, default=8, help="replicas per temperature (torchsim; default 8)")
    group.add_argument(
        "--temperatures", type=temperature_list, default=None,
        help="comma-separated K, e.g. 300,600,900 (torchsim; default --temperature)",
    )
    group.add_argument("--confidence", type=probability, default=0.95, help="confidence level of the intervals (default 0.95)")
    group.add_argument("--trajectories", action="store_true", help="write one ASE trajectory per replica (torchsim)")
    # ``run`` is what ase_symdiag.cli.app dispatches on; ``func`` the conventional name
    p.set_defaults(run=run, func=run)


def temperature_list(text: str) -> list:
    """``"300,600,900"`` -> [300.0, 600.0, 900.0] (finite, >= 0 K)."""
    try:
        values = [nonnegative_float(part.strip()) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated temperatures >= 0 K, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated temperatures >= 0 K, got '{text}'")
    return values


def md_quadrature(text: str) -> Any:
    """``"adaptive"`` or anything :func:`~ase_symdiag.cli.common.quadrature_spec` takes."""
    return "adaptive" if text.strip().lower() == "adaptive" else quadrature_spec(text)


def probability(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = positive_float(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got '{text}'")
    return value


def run_torchsim(args: argparse.Namespace, atoms, model=None) -> int:
    """``--engine torchsim``: replicas x temperatures x variants, batched; prints the
    survival statistics (failure fraction and time to failure with intervals).
    ``model``: a loaded TorchSim model (other families); default: the metatomic file ``args.model``."""
    from ase_symdiag.md import MDError
    from ase_symdiag.md.torchsim import run_md_batched

    if args.dtype is not None and model is None:  # other families take --dtype when loaded
        raise MDError("--dtype is not supported by the TorchSim engine (it runs in the model's dtype)")
    if args.variant is not None or args.extensions is not None:
        raise MDError("--energy-variant and --extensions are not supported by the TorchSim engine yet")
    result = run_md_batched(
        args.model if model is None else model, atoms, args.variants, replicas=args.replicas,
        temperatures=args.temperatures or [args.temperature],
        ensemble=args.ensemble, thermostat=args.thermostat, friction=args.friction, taut=args.taut,
        steps=args.steps, timestep=args.timestep, interval=args.interval, out=args.out, resume=args.resume,
        checkpoint_every=args.checkpoint_every, symmetrize=args.quadrature, batch_size=args.batch_size,
        device=args.device, seed=args.seed, min_distance=args.min_distance, max_force=args.max_force,
        max_energy_jump=args.max_energy_jump, trajectories=args.trajectories, confidence=args.confidence,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    for note in result.warnings:  # also under "warnings" in summary.json
        print(f"ase-symdiag md: warning: {' '.join(note.split())}", file=sys.stderr)
    print(result.table())
    print(f"logs, checkpoints and summaries written to {args.out}; survival curves {result.plot}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Read the structure, run every variant, print the summary table; exit status 0."""
    from ase_symdiag.backends.torchsim import is_torchsim_model
    from ase_symdiag.md import MDError, run_md
    from ase_symdiag.structures import from_atoms_list, read_atoms

    quadrature: Any = args.quadrature
    check_outputs({"--out": args.out}, {"model": args.model, "structure": args.structure, "extensions folder": args.extensions})
    images = read_atoms(args.structure, index=args.index)
    if len(images) != 1:
        raise MDError(f"--index {args.index!r} selects {len(images)} structures; MD needs exactly one")
    images = images[0]
    from_atoms_list([images])  # validation: finite positions, sane cell, known elements
    handle = load_handle(args)
    from ase_symdiag.backends.metatomic.model import ModelHandle

    if not isinstance(handle, ModelHandle):  # Orb, MACE, module:callable
        if args.engine != "torchsim":
            require_metatomic(handle, "md --engine ase")
        if not is_torchsim_model(handle):
            raise MDError(f"md --engine torchsim needs a TorchSim model; '{args.model}' gave a {type(handle).__name__}")
        return run_torchsim(args, images, handle)
    handle.check_types(images.numbers, args.structure)  # before any step or file
    if args.engine == "torchsim":
        return run_torchsim(args, images)
    if quadrature == "adaptive":
        raise MDError("--quadrature adaptive needs --engine torchsim (the ASE engine takes a quadrature name or degree)")
    result = run_md(
        handle, images, args.variants,
        ensemble=args.ensemble, steps=args.steps, timestep=args.timestep, temperature=args.temperature,
        thermostat=args.thermostat, friction=args.friction, taut=args.taut, interval=args.interval,
        out=args.out, resume=args.resume, checkpoint_every=args.checkpoint_every, symmetrize=quadrature,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, seed=args.seed,
        min_distance=args.min_distance, max_force=args.max_force, max_energy_jump=args.max_energy_jump,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(result.table())
    print(f"trajectories, logs and summaries written to {args.out}; plot {result.plot}")
    return 0
