"""Command line: ``ase-symdiag <command> ...`` (``ase-symdiag <command> --help``).

One module per command under :mod:`ase_symdiag.cli`, each with ``add_parser`` and
``run``. Exit codes: 0 success, 1 a requested threshold was exceeded, 2 bad input
(any :class:`~ase_symdiag.errors.SymDiagError`, a bad argument, or a file that cannot be
read or written: any ``OSError``), always in one line; ``--traceback`` shows the full
Python traceback. Warnings that concern the result are shown, one line each; only the
named, known-harmless ones (:data:`HARMLESS_WARNINGS`) are silenced.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator, List, Optional

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


#: Python warnings the command line does not show, each known to say nothing about
#: the user's result: (message regex, category, module regex, why). Every other warning
#: (a numerical RuntimeWarning of :mod:`ase_symdiag.metrics.spectrum`, a UserWarning
#: of a model) is shown, in one line.
HARMLESS_WARNINGS = (
    (
        r".*torch\.jit.*is deprecated", DeprecationWarning, "",
        "torch >= 2.10 deprecates TorchScript, which every metatomic model is made of; "
        "the user can do nothing about it, and it changes no number",
    ),
    (r".*TorchScript.*deprecated", DeprecationWarning, "", "the same deprecation, worded differently"),
    (
        r"Setting the shape on a NumPy array has been deprecated", DeprecationWarning, r"ase\.",
        "numpy >= 2.5 deprecates assigning ndarray.shape, which ase 3.29 does in Atoms.new_array; "
        "harmless, and not the user's",
    ),
    (
        r"'torch\.load' received a zip file that looks like a TorchScript archive", UserWarning, "",
        "a TorchScript model given where a checkpoint or PointNet weights are expected: torch "
        "describes how it parses it, and the command then rejects the file in its own one line",
    ),
    (
        r"Detected pickle protocol \d+ in the checkpoint", UserWarning, "",
        "a pickle that torch.save did not write, given as a checkpoint or PointNet weights: the "
        "command checks what it read and rejects the file in its own one line",
    ),
)


def main(argv: Optional[List[str]] = None) -> int:
    from ase_symdiag.errors import SymDiagError

    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None) or args.func
    with warnings.catch_warnings(), one_line_warnings(f"ase-symdiag {args.command}"):
        for message, category, module, _ in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        try:
            return int(run(args))
        except (SymDiagError, OSError) as error:
            # OSError: a file that cannot be read or written (missing, a directory, no
            # permission, a name too long, a full disk or quota, ...), in one line
            if args.traceback:
                raise
            message = " ".join(str(error).split()) or type(error).__name__
            print(f"ase-symdiag {args.command}: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"ase-symdiag {args.command}: interrupted", file=sys.stderr)
            return 130


@contextlib.contextmanager
def one_line_warnings(prefix: str) -> Iterator[None]:
    """Within the block, a shown warning is one line, ``PREFIX: warning: MESSAGE (Category)``."""

    def format_warning(message, category, filename, lineno, line=None) -> str:
        text = " ".join(str(message).split())
        return f"{prefix}: warning: {text} ({category.__name__})\n"

    previous = warnings.formatwarning
    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
