"""Reference models of known symmetry: trained PETs and analytic pair potentials.

Modules, in the order data flows through them:

- :mod:`~ase_symdiag.reference.data`: deterministic labelled data sets (Cu/EMT,
  ethanol/GFN2-xTB), extxyz read/write;
- :mod:`~ase_symdiag.reference.config`: the training config (defaults, validation);
- :mod:`~ase_symdiag.reference.samples`: structures with precomputed graphs, splits,
  collation into (optionally rotated) batches;
- :mod:`~ase_symdiag.reference.pet`: the unconstrained PET and its metatomic export;
- :mod:`~ase_symdiag.reference.loss`: predictions, loss and evaluation on batches;
- :mod:`~ase_symdiag.reference.checkpoints`: atomic checkpoints, rebuilding models;
- :mod:`~ase_symdiag.reference.probes`: symmetry-content probes during training;
- :mod:`~ase_symdiag.reference.training`: the resumable training loop;
- :mod:`~ase_symdiag.reference.analytic`: exactly equivariant (or planted-breaking)
  Morse pair potentials.

The names below are imported lazily: ``import ase_symdiag.reference`` loads neither
torch, ASE nor metatomic. The command line lives in :mod:`ase_symdiag.cli`
(``ase-symdiag train``, ``export``, ``training-history``, ``reference-model``).
"""

import importlib
from typing import Any

_LAZY = {
    # data
    "DataError": "data",
    "cu_emt_dataset": "data",
    "ethanol_xtb_dataset": "data",
    "read_dataset": "data",
    "write_dataset": "data",
    "force_rms": "data",
    # config
    "TrainingConfigError": "config",
    "load_config": "config",
    "validate_config": "config",
    # samples, loss
    "Sample": "samples",
    "load_samples": "samples",
    "split_indices": "samples",
    "collate": "samples",
    "predict": "loss",
    "weighted_loss": "loss",
    "evaluate_samples": "loss",
    # model
    "PET": "pet",
    "DEFAULT_HYPERS": "pet",
    "build_pet": "pet",
    "export_pet": "pet",
    # checkpoints, probes, training
    "CheckpointError": "checkpoints",
    "load_checkpoint": "checkpoints",
    "model_from_checkpoint": "checkpoints",
    "probe_representations": "probes",
    "probe_history": "probes",
    "plot_probe_history": "probes",
    "train": "training",
    # analytic
    "PairPotential": "analytic",
    "export_pair_potential": "analytic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"ase_symdiag.reference.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ase_symdiag.reference' has no attribute {name!r}")


def __dir__():
    return __all__
