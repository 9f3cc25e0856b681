"""Symmetry through training, from the checkpoints of a metatrain run (issue 22).

``mtt train`` writes ``model_<epoch>.ckpt`` every ``checkpoint_interval`` epochs. For
each of them, :func:`ase_symdiag.drivers.training_history.metatrain_history` loads the weights *of that epoch* (metatrain's
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
from typing import Dict, List, Optional, Tuple

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
