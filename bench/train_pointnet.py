"""Train the toy-LArTPC PointNet segmenter with and without O(3) augmentation and
measure its symmetry (issue 8).

    OMP_NUM_THREADS=1 python bench/train_pointnet.py            # ~12 min on 1 core
    OMP_NUM_THREADS=1 python bench/train_pointnet.py --quick    # smoke test, ~1 min

Writes models/pointnet/{plain,augmented}.pt (+ .json config), docs/pointcloud/results.json,
docs/pointcloud/layers.png and docs/pointcloud/spectrum.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ase_symdiag.pointcloud.lartpc import LABELS, make_dataset
from ase_symdiag.o3.operations import haar_rotations
from ase_symdiag.pointcloud.diagnostics import analyse_model, spectra_table
from ase_symdiag.pointcloud.pointnet import PointNetConfig, PointNetSegmenter, group, load_model, save_model
from ase_symdiag.report import atomic_savefig, format_table, write_json
from ase_symdiag.metrics.representations import plot_representations


def rotate(positions: torch.Tensor, rotations: np.ndarray) -> torch.Tensor:
    return positions @ torch.as_tensor(rotations, dtype=positions.dtype).transpose(1, 2)


@torch.no_grad()
def accuracy(model, data, rotations=None, batch: int = 100) -> dict:
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


def train(data, test, *, augment: bool, epochs: int, batch: int, lr: float, seed: int, log) -> PointNetSegmenter:
    torch.manual_seed(seed)
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
    step = 0
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = gen.permutation(n)
        losses = []
        for s in range(0, n, batch):
            idx = torch.as_tensor(order[s : s + batch])
            pos = pos_all[idx]
            if augment:
                pos = rotate(pos, haar_rotations(len(idx), int(gen.integers(2**31)), improper=True))
            g = tuple(x[idx] for x in groups)
            out = model(pos, en_all[idx], groups=g)
            loss = F.cross_entropy(out["seg_logits"].reshape(-1, 3), y_all[idx].reshape(-1)) + 0.5 * F.cross_entropy(
                out["event_logits"], ev_all[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        acc = accuracy(model, test)
        log(f"  epoch {epoch + 1:2d} loss {np.mean(losses):.4f} test seg acc {acc['segmentation']:.4f} "
            f"event acc {acc['event']:.3f} ({time.time() - t0:.0f} s)")
    model.eval()
    return model


def plot_spectrum(spectra: dict, lmax: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(spectra.values())))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, outputs in spectra.items():
            out = outputs[name]
            rms = np.sqrt(out.mean_square)
            for sigma, marker, style in ((1, "o", "-"), (-1, "s", "--")):
                ls = [l for l in range(lmax + 1) if (l, sigma) != (0, 1)]
                amps = [max(np.sqrt(out.power[(l, sigma)]) / rms, 1e-16) for l in ls]
                ax.semilogy(ls, amps, marker=marker, linestyle=style, label=f"{label} {'+' if sigma > 0 else '-'}")
        ax.set_xticks(range(lmax + 1))
        ax.set_xlabel("lambda")
        ax.set_ylabel("RMS breaking / RMS output")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--points", type=int, default=512)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lmax", type=int, default=3)
    p.add_argument("--error-events", type=int, default=16, help="test events for the invariance errors")
    p.add_argument("--analysis-events", type=int, default=6, help="test events for spectra and layer content")
    p.add_argument("--analyse-only", action="store_true", help="load the saved weights instead of training")
    p.add_argument("--rotations", type=int, default=16)
    p.add_argument("--models", default="models/pointnet")
    p.add_argument("--docs", default="docs/pointcloud")
    p.add_argument("--quick", action="store_true", help="tiny run for a smoke test (writes under /tmp)")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test, args.epochs, args.error_events, args.analysis_events, args.lmax = 128, 32, 1, 2, 1, 2
        args.models, args.docs = "/tmp/pointnet-quick/models", "/tmp/pointnet-quick/docs"
    torch.set_num_threads(1)

    def log(msg):
        print(msg, flush=True)

    t0 = time.time()
    data = make_dataset(0 if args.analyse_only else args.train, args.points, seed=args.seed)
    test = make_dataset(args.test, args.points, seed=args.seed + 1)
    log(f"data: {args.train} train / {args.test} test events x {args.points} points ({time.time() - t0:.0f} s); "
        f"test point fractions {np.bincount(test['labels'].ravel(), minlength=3) / test['labels'].size}, "
        f"shower events {test['event_label'].mean():.2f}")
    test_rotations = haar_rotations(args.test, args.seed + 2, improper=True)
    analysis = {k: v[: max(args.error_events, args.analysis_events)] for k, v in test.items()}
    previous = {}
    if args.analyse_only and os.path.exists(os.path.join(args.docs, "results.json")):
        with open(os.path.join(args.docs, "results.json")) as handle:
            previous = json.load(handle)
    results = {"config": vars(args), "models": {}}
    reports, spectra = {}, {}
    for name, augment in (("plain", False), ("augmented", True)):
        path = os.path.join(args.models, f"{name}.pt")
        if args.analyse_only:
            model, _ = load_model(path)
            train_s = previous.get("models", {}).get(name, {}).get("train_seconds")
        else:
            log(f"training {name} (augmentation: {'random O(3)' if augment else 'none'})")
            t = time.time()
            model = train(data, test, augment=augment, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed, log=log)
            train_s = time.time() - t
        acc = accuracy(model, test)
        acc_rot = accuracy(model, test, test_rotations)
        if not args.analyse_only:
            save_model(model, path, {"augmented": augment, "train_events": args.train, "epochs": args.epochs,
                                     "train_seconds": train_s, "test_accuracy": acc})
        t = time.time()
        res = analyse_model(model, analysis, lmax=args.lmax, n_rotations=args.rotations, seed=args.seed + 3, label=name,
                            spectrum_events=args.analysis_events)
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
    rows = []
    for name, r in results["models"].items():
        inv = r["invariance"]
        rows.append([name, r["test_accuracy"]["segmentation"], r["test_accuracy_rotated"]["segmentation"],
                     r["test_accuracy"]["event"], r["test_accuracy_rotated"]["event"],
                     inv["seg_logits"]["relative_rms"], inv["seg_prob"]["relative_rms"], inv["seg_logits"]["label_flip"],
                     inv["event_logits"]["relative_rms"], inv["event_logits"]["label_flip"]])
    log(format_table(["model", "seg acc", "seg acc rot", "event acc", "event acc rot", "seg logit rel", "seg prob rel",
                      "seg flips", "event rel", "event flips"], rows))
    log(spectra_table(spectra, args.lmax))
    for name, report in reports.items():
        log(f"model {name}")
        log(report.table())
    write_json(os.path.join(args.docs, "results.json"), results)
    plot_representations(reports, os.path.join(args.docs, "layers.png"))
    plot_spectrum(spectra, args.lmax, os.path.join(args.docs, "spectrum.png"))
    log(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
