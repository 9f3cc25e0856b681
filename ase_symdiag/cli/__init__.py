from ase_symdiag.cli.main import main

__all__ = ["main"]
