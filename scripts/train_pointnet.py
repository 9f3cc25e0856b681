"""Train the toy-LArTPC PointNet segmenter with and without O(3) augmentation and
measure its symmetry (issue 8; :mod:`ase_symdiag.pointcloud.training`).

    OMP_NUM_THREADS=1 python scripts/train_pointnet.py                 # ~12 min on 1 core
    OMP_NUM_THREADS=1 python scripts/train_pointnet.py --analyse-only  # re-measure saved weights
    OMP_NUM_THREADS=1 python scripts/train_pointnet.py --quick         # smoke test, ~1 min

Writes models/pointnet/{plain,augmented}.pt (+ .json config), docs/pointcloud/results.json,
docs/pointcloud/layers.png and docs/pointcloud/spectrum.png (paths relative to the
current directory: run it from the repository root).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

from ase_symdiag.pointcloud.training import ExperimentSettings, run_experiment


def main(argv: Optional[List[str]] = None) -> int:
    d = ExperimentSettings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=d.train, help="training events")
    p.add_argument("--test", type=int, default=d.test, help="test events")
    p.add_argument("--points", type=int, default=d.points, help="points per event")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lmax", type=int, default=d.lmax)
    p.add_argument("--error-events", type=int, default=d.error_events, help="test events for the invariance errors")
    p.add_argument("--analysis-events", type=int, default=d.analysis_events, help="test events for spectra and layer content")
    p.add_argument("--analyse-only", action="store_true", help="load the saved weights instead of training")
    p.add_argument("--rotations", type=int, default=d.rotations)
    p.add_argument("--models", default=d.models)
    p.add_argument("--docs", default=d.docs)
    p.add_argument("--quick", action="store_true", help="tiny run for a smoke test (writes under /tmp)")
    settings = ExperimentSettings(**vars(p.parse_args(argv)))
    if settings.quick:
        settings = settings.quick_run()
    torch.set_num_threads(1)
    run_experiment(settings, log=lambda message: print(message, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
