"""``ase-symdiag md``: MD stability run of raw, symmetrized and corrected variants of a model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ase_symdiag.cli.common import (
    add_model_options,
    load_handle,
    nonnegative_float,
    nonnegative_int,
    output_directory,
    positive_float,
    positive_int,
    quadrature_spec,
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
    p.add_argument("model", help="metatomic model file (.pt)")
    p.add_argument("structure", help="any ASE-readable file (extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default="0", help="ASE index of the structure to read (default 0)")
    p.add_argument("--variants", default="raw,symmetrized", help="comma-separated: raw, symmetrized, corrected (default raw,symmetrized)")
    p.add_argument("--ensemble", choices=["nve", "nvt"], default="nve")
    p.add_argument("--thermostat", choices=["langevin", "bussi"], default="langevin", help="for NVT (default langevin)")
    p.add_argument("--friction", type=nonnegative_float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--taut", type=positive_float, default=100.0, help="Bussi time constant, fs (default 100)")
    p.add_argument("--steps", type=nonnegative_int, default=1000, help="number of MD steps (default 1000)")
    p.add_argument("--timestep", type=positive_float, default=1.0, help="fs (default 1)")
    p.add_argument("--temperature", type=nonnegative_float, default=300.0, help="K: initial velocities and NVT target (default 300)")
    p.add_argument("--interval", type=positive_int, default=1, help="record every N steps (default 1)")
    p.add_argument("--quadrature", type=quadrature_spec, default=3, help="quadrature of the symmetrized variant (default 3)")
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
    # ``run`` is what ase_symdiag.cli.main dispatches on; ``func`` the conventional name
    p.set_defaults(run=run, func=run)


def run(args: argparse.Namespace) -> int:
    """Read the structure, run every variant, print the summary table; exit status 0."""
    from ase_symdiag.md import MDError, run_md
    from ase_symdiag.structures import from_atoms_list, read_atoms

    quadrature: Any = args.quadrature
    images = read_atoms(args.structure, index=args.index)
    if len(images) != 1:
        raise MDError(f"--index {args.index!r} selects {len(images)} structures; MD needs exactly one")
    images = images[0]
    from_atoms_list([images])  # validation: finite positions, sane cell, known elements
    handle = load_handle(args)
    handle.check_types(images.numbers, args.structure)  # before any step or file
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
