"""The ``ase-symdiag`` command line: one module per command, dispatched by :mod:`ase_symdiag.cli.app`."""

from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """``ase-symdiag [--traceback] <command> ...``; returns the exit status."""
    from ase_symdiag.cli.app import main as _main

    return _main(argv)


__all__ = ["main"]
