"""Make ``models/orb-v3-direct-random.ckpt``: a small orb-v3 direct model with random weights.

No Orb weights can be downloaded here, so the README's "Other model families"
transcript runs on this file, through the route a user takes with a real checkpoint::

    ase-symdiag check orb-v3-direct:models/orb-v3-direct-random.ckpt docs/examples/structures.extxyz

The model is orb-models' own ``orb_v3_direct_architecture`` (orb-models 0.5.0, built by
:func:`ase_symdiag.backends.orb.build_architecture`) with small sizes (the sizes of the
test suite's small Orb; the published model: latent 256, MLP 1024, head 256, 5
message-passing steps), random weights from ``--seed``, in eval mode, saved as
orb-models publishes weights: ``torch.save(model.state_dict(), CKPT)`` in float32
(about 1.6 MB). ``orb-v3-direct:CKPT`` reads the sizes back from the tensor shapes and
runs the model in float64 by default. Random weights are not rotationally symmetric:
``check`` finds the breaking.

    python scripts/make_random_orb.py                 # writes models/orb-v3-direct-random.ckpt
    python scripts/make_random_orb.py --seed 1 --out other.ckpt
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models" / "orb-v3-direct-random.ckpt"
#: sizes of orb_v3_direct_architecture (those of tests/family_models.py's small Orb)
SIZES = {"latent_dim": 32, "base_mlp_hidden_dim": 64, "head_mlp_hidden_dim": 32, "num_message_passing_steps": 2}


def make_random_orb(out: pathlib.Path, seed: int) -> int:
    """Build the random orb-v3 direct model from ``seed``, save its float32 state_dict
    to ``out``, load it back through ``orb-v3-direct:OUT`` and return its parameter count."""
    import torch

    from ase_symdiag.backends.loading import load_model
    from ase_symdiag.backends.orb import build_architecture

    torch.manual_seed(seed)
    model = build_architecture("orb-v3-direct", **SIZES).float().eval()
    torch.save(model.state_dict(), out)
    load_model(f"orb-v3-direct:{out}")  # loads back the way the command line reads it (ModelError if not)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="checkpoint to write (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights (default: %(default)s)")
    args = parser.parse_args(argv)
    parameters = make_random_orb(args.out, args.seed)
    size = args.out.stat().st_size
    print(f"{args.out}: orb-v3 direct, {parameters} parameters, seed {args.seed}, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
