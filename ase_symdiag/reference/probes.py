"""Symmetry-content probes recorded during training (issue 5), read back and plotted.

With ``probes:`` in the training config, :func:`ase_symdiag.reference.training.train`
stores :func:`probe_representations` of the first validation structures in the
history record of epoch 1, of every ``every``-th epoch and of the last one.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch

from ase_symdiag.reference.checkpoints import load_checkpoint

#: ``{layer: [(epoch, invariant_fraction), ...]}``
ProbeHistory = Dict[str, List[Tuple[int, float]]]


def probe_representations(model: torch.nn.Module, structures: Sequence, lmax: int) -> dict:
    """Per-layer symmetry content of ``model`` (a :class:`~ase_symdiag.reference.pet.PET`) on ``structures``.

    The model is exported in memory and analysed by
    :func:`ase_symdiag.drivers.representations.representation_content` on the smallest
    quadrature exact to ``2 lmax``. Returns ``{layer: {"invariant_fraction", "fractions"}}``.
    """
    from ase_symdiag.drivers.representations import representation_content
    from ase_symdiag.reference.pet import export_pet

    was_training = model.training
    model.eval()
    try:
        exported = export_pet(model)
    finally:
        model.train(was_training)
    report = representation_content(exported, structures, lmax=lmax)
    return {
        layer.layer: {"invariant_fraction": layer.invariant_fraction, "fractions": layer.to_dict()["fractions"]}
        for layer in report.layers
    }


def probe_history(checkpoint_path: str) -> ProbeHistory:
    """``{layer: [(epoch, invariant_fraction), ...]}`` from a checkpoint's probes."""
    history = load_checkpoint(checkpoint_path)["history"]
    out: ProbeHistory = {}
    for record in history:
        for layer, content in (record.get("representations") or {}).items():
            out.setdefault(layer, []).append((record["epoch"], content["invariant_fraction"]))
    return out


def plot_probe_history(histories: Dict[str, ProbeHistory], path: str) -> None:
    """1 - invariant fraction of each layer against epoch (log scale), one line per
    run (``histories`` keys) and layer, written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    styles = ["-", "--", ":", "-."]
    for r, (label, layers) in enumerate(histories.items()):
        for k, (layer, points) in enumerate(sorted(layers.items())):
            epochs = [p[0] for p in points]
            values = [max(1.0 - p[1], 1e-16) for p in points]
            ax.semilogy(epochs, values, styles[r % len(styles)], marker="o", ms=3, color=f"C{k}",
                        label=f"{label}: {layer.split('::')[-1]}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("1 - invariant fraction")
    ax.set_title("symmetry content of each layer during training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
