"""The training configuration of the reference PET models: defaults, loading, validation.

Config keys (paths relative to the config file's directory when read from a file)::

    name: cu-emt-augmented
    data: data/cu-emt.extxyz
    output_dir: checkpoints/cu-emt-augmented   # checkpoint.pt, metrics.json
    export: cu-emt-augmented.pt                 # optional
    seed: 0
    dtype: float32
    num_threads: 1
    split: {train: 0.8, validation: 0.1, test: 0.1}
    max_structures: null                        # optional, use only the first n
    model: {d_model: 48, n_heads: 2, n_layers: 2, cutoff: 5.0, ...}
    training:
      epochs: 60
      batch_size: 8
      learning_rate: 0.002
      scheduler: cosine        # or step (step_size, gamma), or none
      min_learning_rate: 1.0e-5
      weights: {energy: 1.0, forces: 1.0, stress: 100.0, direct_forces: 1.0}
                               # optional: equigrad: 0.0 (rotational-gradient penalty, eV^-2)
      augmentation_fraction: 1.0
      energy_warmup_epochs: 0  # energy weight ramps linearly from 0 over these epochs
      time_limit_s: null       # stop (resumably) after the epoch that passes it
    resume: auto               # auto | true | false
    progress: true
    probes: {every: 5, structures: 2, lmax: 2}  # optional: per-layer symmetry content of
                               # the first validation structures, recorded in the history
                               # at epoch 1, every `every` epochs and at the end

This module needs neither torch nor ASE.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any, Dict, Optional

from ase_symdiag.errors import SymDiagError


class TrainingConfigError(SymDiagError):
    """The training configuration is invalid."""


DEFAULT_TRAINING: Dict[str, Any] = {
    "epochs": 60,
    "batch_size": 8,
    "learning_rate": 2e-3,
    "scheduler": "cosine",
    "min_learning_rate": 1e-5,
    "step_size": 20,
    "gamma": 0.5,
    "weights": {"energy": 1.0, "forces": 1.0, "stress": 100.0, "direct_forces": 1.0},
    "augmentation_fraction": 1.0,
    "time_limit_s": None,
    "grad_clip": 10.0,
    "energy_warmup_epochs": 0,
}

DEFAULT_CONFIG: Dict[str, Any] = {
    "name": "pet",
    "data": None,
    "output_dir": None,
    "export": None,
    "seed": 0,
    "dtype": "float32",
    "num_threads": 1,
    "split": {"train": 0.8, "validation": 0.1, "test": 0.1},
    "max_structures": None,
    "model": {},
    "training": {},
    "resume": "auto",
    "progress": True,
    "base_dir": None,
    "probes": None,
}

#: symmetry-content probes recorded during training (issue 5); ``probes: {}`` in a config
#: turns them on with these defaults
DEFAULT_PROBES: Dict[str, int] = {"every": 5, "structures": 2, "lmax": 2}

#: the dtypes a config may name (torch dtypes: :func:`torch_dtype`)
DTYPES = ("float32", "float64")

#: the loss weights a config may set
LOSS_WEIGHTS = ("energy", "forces", "stress", "direct_forces", "equigrad")


def torch_dtype(name: str):
    """The torch dtype of ``"float32"`` or ``"float64"``."""
    import torch

    if name not in DTYPES:
        raise TrainingConfigError(f"dtype must be 'float32' or 'float64', got {name!r}")
    return torch.float64 if name == "float64" else torch.float32


def load_config(path: str) -> dict:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config; relative paths
    in it are resolved against the file's directory (``base_dir``)."""
    if not os.path.exists(path):
        raise TrainingConfigError(f"config file '{path}' does not exist")
    try:
        if path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as f:
                config = tomllib.load(f)
        else:
            import yaml

            with open(path) as f:
                config = yaml.safe_load(f)
    except Exception as error:
        raise TrainingConfigError(f"could not parse config '{path}': {error}") from None
    if not isinstance(config, dict):
        raise TrainingConfigError(f"config '{path}' must be a mapping, got {type(config).__name__}")
    config.setdefault("base_dir", os.path.dirname(os.path.abspath(path)))
    return config


def resolve_path(config: dict, path: Optional[str]) -> Optional[str]:
    """``path`` (``~`` expanded) relative to the config's ``base_dir`` unless absolute."""
    if path is None:
        return None
    path = os.path.expanduser(str(path))
    if os.path.isabs(path) or config.get("base_dir") is None:
        return path
    return os.path.join(config["base_dir"], path)


def validate_config(config: dict) -> dict:
    """Fill defaults and check a config; raises :class:`TrainingConfigError`."""
    if not isinstance(config, dict):
        raise TrainingConfigError(f"config must be a dict, got {type(config).__name__}")
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise TrainingConfigError(
            f"unknown config keys {sorted(unknown)}; known keys are {sorted(DEFAULT_CONFIG)}"
        )
    merged = copy.deepcopy(DEFAULT_CONFIG)
    merged.update(copy.deepcopy(config))
    merged["training"] = _merge_training(merged.get("training") or {})

    if merged["data"] is None:
        raise TrainingConfigError("config needs 'data': the path of an extxyz data set")
    if merged["output_dir"] is None:
        raise TrainingConfigError("config needs 'output_dir': where checkpoints and metrics go")
    if merged["dtype"] not in DTYPES:
        raise TrainingConfigError(f"dtype must be 'float32' or 'float64', got {merged['dtype']!r}")
    _check_training(merged["training"])
    split = merged["split"]
    if not isinstance(split, dict) or set(split) != {"train", "validation", "test"}:
        raise TrainingConfigError("split must have exactly the keys train, validation, test")
    fractions = {key: _number(value, f"split.{key}") for key, value in split.items()}
    if any(not math.isfinite(v) or v < 0 for v in fractions.values()) or fractions["train"] <= 0:
        raise TrainingConfigError(f"split fractions must be >= 0 (train > 0), got {split}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise TrainingConfigError(f"split fractions must sum to 1, got {split} (sum {sum(fractions.values()):g})")
    for key in ("seed", "num_threads", "max_structures"):
        value = merged[key]
        if key == "max_structures" and value is None:
            continue
        lowest = 0 if key == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise TrainingConfigError(f"{key} must be an integer >= {lowest}, got {value!r}")
    if merged["resume"] not in ("auto", True, False):
        raise TrainingConfigError(f"resume must be auto, true or false, got {merged['resume']!r}")
    if merged["probes"] is not None:
        merged["probes"] = _probes_section(merged["probes"])
    from ase_symdiag.reference.pet import DEFAULT_HYPERS

    unknown = set(merged["model"] or {}) - set(DEFAULT_HYPERS)
    if unknown:
        raise TrainingConfigError(
            f"unknown model hyper-parameters {sorted(unknown)}; known are {sorted(DEFAULT_HYPERS)}"
        )
    return merged


def _merge_training(user_training: Any) -> dict:
    """``training:`` merged with :data:`DEFAULT_TRAINING` (weights merged key by key)."""
    if not isinstance(user_training, dict):
        raise TrainingConfigError("'training' must be a mapping")
    unknown = set(user_training) - set(DEFAULT_TRAINING)
    if unknown:
        raise TrainingConfigError(
            f"unknown training keys {sorted(unknown)}; known keys are {sorted(DEFAULT_TRAINING)}"
        )
    training = copy.deepcopy(DEFAULT_TRAINING)
    weights = dict(training["weights"])
    weights.update(user_training.get("weights") or {})
    training.update(user_training)
    training["weights"] = weights
    return training


def _check_training(training: dict) -> None:
    """Check the values of a merged ``training:`` section."""
    fraction = training["augmentation_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) <= 1.0:
        raise TrainingConfigError(f"augmentation_fraction must be in [0, 1], got {fraction!r}")
    for key in ("epochs", "batch_size"):
        value = training[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TrainingConfigError(f"training.{key} must be a positive integer, got {value!r}")
    for key in ("learning_rate", "min_learning_rate", "gamma"):
        value = _number(training[key], key)
        if not (math.isfinite(value) and value > 0 if key != "min_learning_rate" else math.isfinite(value) and value >= 0):
            raise TrainingConfigError(f"{key} must be a finite number > 0, got {training[key]!r}")
    for key in ("step_size", "energy_warmup_epochs"):
        value = training[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "step_size" else 0):
            raise TrainingConfigError(f"training.{key} must be a non-negative integer, got {value!r}")
    for key in ("time_limit_s", "grad_clip"):
        value = training[key]
        if value is not None and value is not False and not _number(value, key) >= 0:
            raise TrainingConfigError(f"training.{key} must be a number >= 0 or null, got {value!r}")
    if training["scheduler"] not in ("cosine", "step", "none"):
        raise TrainingConfigError(
            f"scheduler must be 'cosine', 'step' or 'none', got {training['scheduler']!r}"
        )
    weights = training["weights"]
    unknown = set(weights) - set(LOSS_WEIGHTS)
    if unknown:
        raise TrainingConfigError(f"unknown loss weights {sorted(unknown)}")
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
            raise TrainingConfigError(f"loss weight '{key}' must be a number >= 0, got {value!r}")


def _number(value: Any, what: str) -> float:
    """``float(value)`` (YAML reads ``2e-3`` as a string), or a :class:`TrainingConfigError`."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TrainingConfigError(f"{what} must be a number, got {value!r}") from None


def _probes_section(probes: Any) -> dict:
    """``probes:`` merged with :data:`DEFAULT_PROBES`, checked."""
    if not isinstance(probes, dict) or set(probes) - set(DEFAULT_PROBES):
        raise TrainingConfigError(f"probes must be a mapping with keys among {sorted(DEFAULT_PROBES)}")
    merged = dict(DEFAULT_PROBES)
    merged.update(probes)
    for key, value in merged.items():
        if not isinstance(value, int) or value < (0 if key == "lmax" else 1):
            raise TrainingConfigError(f"probes.{key} must be a positive integer, got {value!r}")
    return merged
