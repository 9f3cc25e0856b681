"""Symmetry through training, from the checkpoints of a metatrain run (issue 22).

``mtt train`` writes ``model_<epoch>.ckpt`` every ``checkpoint_interval`` epochs. For
each of them, :func:`metatrain_history` loads the weights *of that epoch* (metatrain's
``restart`` context, :mod:`ase_symdiag.backends.metatomic.metatrain`) and measures on
the given structures

- the per-layer symmetry content (docs/methods.md §5): the invariant fraction of each
  GNN layer's node and edge features, the heads and ``feature``;
- the output breaking (§1): the worst energy error per atom, RMS force error per
  component and stress error over the structures and ``n_rotations`` Haar-random
  operations (seeded, every second improper).

The layer history has the shape of the reference trainer's probes
(:data:`ase_symdiag.reference.probes.ProbeHistory`), so the same plot draws both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ase_symdiag.structures import Structure

#: ``(summary key of the equivariance check, column name)`` of the output breaking
OUTPUT_COLUMNS = (
    ("energy_max_meV_per_atom", "energy max (meV/atom)"),
    ("force_rms_per_component_eV_per_A", "force RMS (eV/A)"),
    ("stress_max_GPa", "stress max (GPa)"),
)


@dataclass
class EpochBreaking:
    """Output breaking of one epoch's model: worst values over the structures (None
    where no structure has the output, e.g. stress without a periodic structure)."""

    epoch: int
    checkpoint: str
    energy_max_meV_per_atom: float
    force_rms_per_component_eV_per_A: Optional[float]
    stress_max_GPa: Optional[float]


@dataclass
class TrainingHistory:
    """Per-layer invariant fraction and output breaking against epoch, for one run."""

    run: str
    lmax: int
    n_rotations: int
    n_structures: int
    layers: Dict[str, List[Tuple[int, float]]] = field(default_factory=dict)  # {layer: [(epoch, invariant)]}
    outputs: List[EpochBreaking] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "lmax": self.lmax,
            "n_rotations": self.n_rotations,
            "n_structures": self.n_structures,
            "layers": {layer: [list(p) for p in points] for layer, points in self.layers.items()},
            "outputs": [vars(row) for row in self.outputs],
        }

    def output_rows(self) -> List[list]:
        """``[run, epoch, energy, forces, stress]`` rows, one per epoch."""
        return [[self.run, row.epoch] + [getattr(row, key) for key, _ in OUTPUT_COLUMNS] for row in self.outputs]


def metatrain_history(
    directory: str,
    structures: Sequence[Structure],
    *,
    run: Optional[str] = None,
    lmax: int = 2,
    n_rotations: int = 8,
    seed: int = 0,
    batch_size: int = 16,
    device: Optional[str] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> TrainingHistory:
    """Layer content and output breaking of every ``model_<epoch>.ckpt`` under ``directory``.

    ``lmax``: largest angular channel resolved for the layers (quadrature exact to
    ``2 lmax``); ``n_rotations``/``seed``: operations of the output check. ``progress``
    is called with each checkpoint's path before it is measured.
    """
    import os

    from ase_symdiag.backends.metatomic.metatrain import checkpoint_handle, training_checkpoints
    from ase_symdiag.metrics.equivariance import check_equivariance
    from ase_symdiag.metrics.representations import representation_content

    run = run or os.path.basename(os.path.abspath(directory))
    history = TrainingHistory(run=run, lmax=lmax, n_rotations=n_rotations, n_structures=len(structures))
    for epoch, path in training_checkpoints(directory):
        if progress is not None:
            progress(path)
        handle = checkpoint_handle(path, weights="epoch", device=device)
        report = representation_content(handle, structures, lmax=lmax, batch_size=batch_size)
        for layer in report.layers:
            history.layers.setdefault(layer.layer, []).append((epoch, layer.invariant_fraction))
        summary = check_equivariance(handle, structures, n_rotations=n_rotations, seed=seed, batch_size=batch_size).summary()
        history.outputs.append(EpochBreaking(epoch, path, *(summary[key] for key, _ in OUTPUT_COLUMNS)))
    return history
