"""Generate a reference training data set (:mod:`ase_symdiag.reference.data`)::

    python -m ase_symdiag.cli.reference_data cu models/data/cu-emt.extxyz --n 400
    python -m ase_symdiag.cli.reference_data ethanol models/data/ethanol-xtb.extxyz --n 500

``cu``: fcc Cu bulk labelled with EMT (default 400 structures); ``ethanol``: gas-phase
ethanol labelled with GFN2-xTB (needs ``tblite``, default 500 structures). The same
``--seed`` always gives the same structures.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

#: default number of structures of each data set
DEFAULT_N = {"cu": 400, "ethanol": 500}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ase_symdiag.cli.reference_data",
        description="Deterministic reference data sets for training the reference PET models.",
    )
    parser.add_argument("kind", choices=sorted(DEFAULT_N))
    parser.add_argument("output", help="extxyz file to write")
    parser.add_argument("--n", type=int, default=None, help="number of structures (default: cu 400, ethanol 500)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Write the data set; exit status 2 (one line on stderr) on bad input."""
    from ase_symdiag.errors import SymDiagError
    from ase_symdiag.reference.data import cu_emt_dataset, ethanol_xtb_dataset, force_rms, write_dataset

    args = build_parser().parse_args(argv)
    n = DEFAULT_N[args.kind] if args.n is None else args.n
    try:
        if args.kind == "cu":
            images = cu_emt_dataset(n, seed=args.seed)
        else:
            images = ethanol_xtb_dataset(n, seed=args.seed)
    except SymDiagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_dataset(images, args.output)
    scale = f" (force RMS {force_rms(images):.4f} eV/Å)" if images else ""
    print(f"wrote {len(images)} structures to {args.output}{scale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
