"""Training the toy-LArTPC PointNet segmenter with and without O(3) augmentation, and
measuring its symmetry (issue 8; ``docs/pointcloud.md``).

:func:`run_experiment` trains :class:`~ase_symdiag.pointcloud.pointnet.PointNetSegmenter`
twice on the events of :func:`~ase_symdiag.pointcloud.lartpc.make_dataset` (``plain``:
no augmentation; ``augmented``: a Haar-random O(3) operation, half of them improper,
per event and step), analyses both with
:func:`~ase_symdiag.pointcloud.diagnostics.analyse_model` and writes
``{models}/{plain,augmented}.pt`` (+ ``.json``), ``{docs}/results.json``,
``{docs}/layers.png`` and ``{docs}/spectrum.png``. Command line:
``scripts/train_pointnet.py``.

Units: positions in cm, deposited energy in MeV (as in :mod:`ase_symdiag.pointcloud.lartpc`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ase_symdiag.o3.operations import haar_rotations
from ase_symdiag.pointcloud.lartpc import LABELS
from ase_symdiag.pointcloud.pointnet import PointNetConfig, PointNetSegmenter, group


@dataclasses.dataclass
class ExperimentSettings:
    """What :func:`run_experiment` does; stored as ``config`` in ``results.json``."""

    train: int = 2000  # training events
    test: int = 300  # test events
    points: int = 512  # points per event
    epochs: int = 20
    batch: int = 32
    lr: float = 2e-3  # peak learning rate of the one-cycle schedule
    seed: int = 0
    lmax: int = 3
    error_events: int = 16  # test events for the invariance errors
    analysis_events: int = 6  # test events for spectra and layer content
    analyse_only: bool = False  # load the saved weights instead of training
    rotations: int = 16  # Haar-random operations of the invariance errors
    models: str = "models/pointnet"  # where the weights go
    docs: str = "docs/pointcloud"  # where results.json and the plots go
    quick: bool = False  # tiny smoke-test run under /tmp (see :meth:`quick_run`)

    def quick_run(self) -> "ExperimentSettings":
        """These settings shrunk to a ~1 min smoke test writing under ``/tmp/pointnet-quick``."""
        return dataclasses.replace(
            self, train=128, test=32, epochs=1, error_events=2, analysis_events=1, lmax=2,
            models="/tmp/pointnet-quick/models", docs="/tmp/pointnet-quick/docs", quick=True,
        )


def rotate(positions: torch.Tensor, rotations: np.ndarray) -> torch.Tensor:
    """Positions (B, N, 3) rotated by one (3, 3) matrix per event (``rotations`` (B, 3, 3))."""
    return positions @ torch.as_tensor(rotations, dtype=positions.dtype).transpose(1, 2)


@torch.no_grad()
def accuracy(
    model: PointNetSegmenter, data: Dict[str, np.ndarray], rotations: Optional[np.ndarray] = None, batch: int = 100
) -> dict:
    """Point segmentation accuracy (overall and per class) and event accuracy on
    ``data`` (events optionally rotated, ``rotations`` (n_events, 3, 3))."""
    model.eval()
    correct = total = ev_correct = 0
    per_class = np.zeros((3, 2))
    n = len(data["positions"])
    for s in range(0, n, batch):
        pos = torch.as_tensor(data["positions"][s : s + batch])
        if rotations is not None:
            pos = rotate(pos, rotations[s : s + batch])
        out = model(pos, torch.as_tensor(data["energy"][s : s + batch]))
        pred = out["seg_logits"].argmax(-1).numpy()
        y = data["labels"][s : s + batch]
        correct += (pred == y).sum()
        total += y.size
        for c in range(3):
            per_class[c] += [((pred == y) & (y == c)).sum(), (y == c).sum()]
        ev_correct += (out["event_logits"].argmax(-1).numpy() == data["event_label"][s : s + batch]).sum()
    return {
        "segmentation": float(correct / total),
        "per_class": {LABELS[c]: float(per_class[c, 0] / max(per_class[c, 1], 1)) for c in range(3)},
        "event": float(ev_correct / n),
    }


def train_segmenter(
    data: Dict[str, np.ndarray],
    test: Dict[str, np.ndarray],
    *,
    augment: bool,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    log: Callable[[str], None],
) -> PointNetSegmenter:
    """AdamW + one-cycle training on segmentation + 0.5 x event cross-entropy, with a
    Haar-random O(3) operation per event and step if ``augment``; logs the test
    accuracy after each epoch. Returns the model in eval mode. torch's global generator
    is not used (parameters: ``PointNetConfig.seed``; rotations: numpy)."""
    model = PointNetSegmenter(PointNetConfig(n_points=data["positions"].shape[1], seed=seed))
    pos_all = torch.as_tensor(data["positions"])
    en_all = torch.as_tensor(data["energy"])
    y_all = torch.as_tensor(data["labels"])
    ev_all = torch.as_tensor(data["event_label"])
    # the grouping is invariant: computed once, reused for the rotated copies
    groups = group(pos_all, en_all, model.config.n_groups, model.config.group_size)
    n = len(pos_all)
    steps = epochs * ((n + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = np.random.default_rng(seed)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = gen.permutation(n)
        losses = []
        for s in range(0, n, batch):
            idx = torch.as_tensor(order[s : s + batch])
            pos = pos_all[idx]
            if augment:
                pos = rotate(pos, haar_rotations(len(idx), int(gen.integers(2**31)), include_inversion=True))
            g = tuple(x[idx] for x in groups)
            out = model(pos, en_all[idx], groups=g)
            loss = F.cross_entropy(out["seg_logits"].reshape(-1, 3), y_all[idx].reshape(-1)) + 0.5 * F.cross_entropy(
                out["event_logits"], ev_all[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        acc = accuracy(model, test)
        log(f"  epoch {epoch + 1:2d} loss {np.mean(losses):.4f} test seg acc {acc['segmentation']:.4f} "
            f"event acc {acc['event']:.3f} ({time.time() - t0:.0f} s)")
    model.eval()
    return model


def plot_spectrum(spectra: Dict[str, dict], lmax: int, path: str) -> None:
    """RMS breaking per (lambda, parity) channel relative to the RMS output, one panel
    per output and one line per model and parity (``spectra``: model -> output -> spectrum)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_symdiag.plots import plot_channels
    from ase_symdiag.report import atomic_savefig

    names = list(next(iter(spectra.values())))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, outputs in spectra.items():
            out = outputs[name]
            plot_channels(ax, out, lmax, label, scale=1.0 / max(out.rms(out.mean_square), 1e-300))
        ax.set_xticks(range(lmax + 1))
        ax.set_xlabel("lambda")
        ax.set_ylabel("RMS breaking / RMS output")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def run_experiment(settings: ExperimentSettings, log: Callable[[str], None] = print) -> dict:
    """Train (or, with ``analyse_only``, load) the plain and augmented models, analyse
    them, log the tables and write weights, ``results.json`` and the plots. Returns the
    results dict written to ``results.json``."""
    from ase_symdiag.plots import plot_representations
    from ase_symdiag.pointcloud.diagnostics import analyse_model
    from ase_symdiag.pointcloud.lartpc import make_dataset
    from ase_symdiag.pointcloud.pointnet import load_model, save_model
    from ase_symdiag.report import write_json

    t0 = time.time()
    data = make_dataset(0 if settings.analyse_only else settings.train, settings.points, seed=settings.seed)
    test = make_dataset(settings.test, settings.points, seed=settings.seed + 1)
    log(f"data: {settings.train} train / {settings.test} test events x {settings.points} points ({time.time() - t0:.0f} s); "
        f"test point fractions {np.bincount(test['labels'].ravel(), minlength=3) / test['labels'].size}, "
        f"shower events {test['event_label'].mean():.2f}")
    test_rotations = haar_rotations(settings.test, settings.seed + 2, include_inversion=True)
    analysis = {k: v[: max(settings.error_events, settings.analysis_events)] for k, v in test.items()}
    previous = {}
    if settings.analyse_only and os.path.exists(os.path.join(settings.docs, "results.json")):
        with open(os.path.join(settings.docs, "results.json")) as handle:
            previous = json.load(handle)
    results = {"config": dataclasses.asdict(settings), "models": {}}
    reports, spectra = {}, {}
    for name, augment in (("plain", False), ("augmented", True)):
        path = os.path.join(settings.models, f"{name}.pt")
        if settings.analyse_only:
            model, _ = load_model(path)
            train_s = previous.get("models", {}).get(name, {}).get("train_seconds")
        else:
            log(f"training {name} (augmentation: {'random O(3)' if augment else 'none'})")
            t = time.time()
            model = train_segmenter(data, test, augment=augment, epochs=settings.epochs, batch=settings.batch, lr=settings.lr,
                                    seed=settings.seed, log=log)
            train_s = time.time() - t
        acc = accuracy(model, test)
        acc_rot = accuracy(model, test, test_rotations)
        if not settings.analyse_only:
            save_model(model, path, {"augmented": augment, "train_events": settings.train, "epochs": settings.epochs,
                                     "train_seconds": train_s, "test_accuracy": acc})
        t = time.time()
        res = analyse_model(model, analysis, lmax=settings.lmax, n_rotations=settings.rotations, seed=settings.seed + 3, label=name,
                            spectrum_events=settings.analysis_events)
        log(f"  analysis {time.time() - t:.0f} s")
        reports[name] = res["layers"]
        spectra[name] = res["spectra"]
        results["models"][name] = {
            "augmented": augment,
            "train_seconds": train_s,
            "test_accuracy": acc,
            "test_accuracy_rotated": acc_rot,
            "invariance": res["error_summary"],
            "errors": [e.to_dict() for e in res["errors"]],
            "spectra": {k: v.to_dict() for k, v in res["spectra"].items()},
            "layers": res["layers"].to_dict(),
            "quadrature": res["quadrature"],
            "n_error_events": res["n_error_events"],
            "n_spectrum_events": res["n_spectrum_events"],
        }
    _log_tables(results, spectra, reports, settings.lmax, log)
    write_json(os.path.join(settings.docs, "results.json"), results)
    plot_representations(reports, os.path.join(settings.docs, "layers.png"))
    plot_spectrum(spectra, settings.lmax, os.path.join(settings.docs, "spectrum.png"))
    log(f"done in {time.time() - t0:.0f} s")
    return results


def _log_tables(results: dict, spectra: dict, reports: dict, lmax: int, log: Callable[[str], None]) -> None:
    """Accuracy and invariance table, spectra table and per-model layer content."""
    from ase_symdiag.pointcloud.diagnostics import spectra_table
    from ase_symdiag.report import format_table

    rows = []
    for name, r in results["models"].items():
        inv = r["invariance"]
        rows.append([name, r["test_accuracy"]["segmentation"], r["test_accuracy_rotated"]["segmentation"],
                     r["test_accuracy"]["event"], r["test_accuracy_rotated"]["event"],
                     inv["seg_logits"]["relative_rms"], inv["seg_prob"]["relative_rms"], inv["seg_logits"]["label_flip"],
                     inv["event_logits"]["relative_rms"], inv["event_logits"]["label_flip"]])
    log(format_table(["model", "seg acc", "seg acc rot", "event acc", "event acc rot", "seg logit rel", "seg prob rel",
                      "seg flips", "event rel", "event flips"], rows))
    log(spectra_table(spectra, lmax))
    for name, report in reports.items():
        log(f"model {name}")
        log(report.table())
