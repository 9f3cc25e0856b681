"""Command line: ``ase-symdiag <command> ...`` (``ase-symdiag <command> --help``).

One module per command under :mod:`ase_symdiag.cli`, each with ``add_parser`` and
``run``. Exit codes: 0 success, 1 a requested threshold was exceeded, 2 bad input
(any :class:`~ase_symdiag.errors.SymDiagError`, a missing file, or a bad argument),
always in one line; ``--traceback`` shows the full Python traceback.
"""

from __future__ import annotations

import sys
import warnings
from typing import List, Optional

from ase_symdiag.cli import (
    check,
    compare,
    history,
    md,
    pointcloud,
    reference_model,
    representations,
    spectrum,
    symmetrize,
    train,
    uncertainty,
)
from ase_symdiag.cli.common import ArgumentParser


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="ase-symdiag",
        description="Rotational-symmetry diagnostics for machine-learned interatomic potentials.",
    )
    parser.add_argument("-T", "--traceback", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", parser_class=ArgumentParser)
    subparsers.required = True
    for add in COMMANDS:
        add(subparsers)
    return parser


COMMANDS = [
    check.add_parser,
    spectrum.add_parser,
    symmetrize.add_parser,
    representations.add_parser,
    compare.add_parser,
    md.add_parser,
    train.add_parser,  # train, export
    history.add_parser,  # training-history
    uncertainty.add_parser,
    pointcloud.add_parser,
    reference_model.add_parser,
]


def main(argv: Optional[List[str]] = None) -> int:
    from ase_symdiag.errors import SymDiagError

    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None) or args.func
    with warnings.catch_warnings():
        # No Python warning reaches the terminal: torch >= 2.10 deprecates TorchScript,
        # which metatomic models are made of, and numerical warnings are turned into
        # errors by the code that can name the structure.
        warnings.simplefilter("ignore")
        try:
            return int(run(args))
        except (SymDiagError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
            if args.traceback:
                raise
            message = " ".join(str(error).split()) or type(error).__name__
            print(f"ase-symdiag {args.command}: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"ase-symdiag {args.command}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
