"""Training the reference PET models (:mod:`ase_symdiag.reference.pet`) with rotational augmentation.

``train(config)`` runs a complete, resumable training from a config dict (or a
YAML/TOML file via :func:`load_config`):

- data: an extxyz file with energies, forces and (optionally) stress, split into
  train/validation/test by ``seed``; neighbour lists are computed ONCE per structure
  (a rotation of positions and cell does not change the graph, only rotates the
  edge vectors) and structures are collated into batches by hand;
- loss: weighted MSE of per-atom energy (eV/atom), conservative forces
  (``-dE/dx``, eV/Å) and conservative stress (``dE/de / V``, eV/Å^3, fully periodic
  structures with a stress label only), plus direct forces if the model has the
  direct head, plus optionally Orb-v3's "equigrad" rotational-gradient penalty
  (weight ``weights.equigrad``, default 0; see :func:`predict`): the mean over
  structures of ``||A||_F^2`` (eV^2), ``A = (W - W^T)/2`` the antisymmetric part of
  ``W = dE/d(eps)`` for an identity strain ``eps`` applied to positions and cell,
  i.e. the energy's gradient with respect to an infinitesimal rotation (zero for an
  exactly rotation-invariant energy; for a finite system ``||A||_F^2 = |tau|^2 / 2``
  with ``tau = sum_i r_i x F_i`` the net torque of the conservative forces);
- augmentation: each structure, each epoch, is rotated with probability
  ``augmentation_fraction`` by a Haar-random O(3) operation (proper or improper,
  :func:`ase_symdiag.o3.operations.haar_rotations`), positions, cell, forces and
  stress consistently (``x R^T``, ``cell R^T``, ``F R^T``, ``R S R^T``);
- Adam with a cosine or step learning-rate schedule; the model with the best
  validation loss is kept;
- a checkpoint (model, best model, optimizer, scheduler, RNG states, epoch, history)
  is written atomically after every epoch; an interrupted run resumes exactly from
  it (``resume: true``, or automatically when the checkpoint exists);
- at the end, test MAE/RMSE of energy (meV/atom), forces (meV/Å) and stress
  (meV/Å^3 and GPa) go to ``metrics.json`` next to the checkpoint, and the model
  is exported with :func:`ase_symdiag.reference.pet.export_pet` if ``export`` is set.

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
      scheduler: cosine        # or step (step_size, gamma)
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
"""

from __future__ import annotations

import copy
import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ase_symdiag.errors import SymDiagError
from ase_symdiag.o3.operations import haar_rotations


class TrainingConfigError(SymDiagError):
    """The training configuration is invalid."""


class CheckpointError(SymDiagError):
    """A checkpoint is missing, unreadable or does not match the configuration."""


DEFAULT_TRAINING = {
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

DEFAULT_CONFIG = {
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
DEFAULT_PROBES = {"every": 5, "structures": 2, "lmax": 2}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------- config


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


def _resolve(config: dict, path: Optional[str]) -> Optional[str]:
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
    training = copy.deepcopy(DEFAULT_TRAINING)
    user_training = merged.get("training") or {}
    if not isinstance(user_training, dict):
        raise TrainingConfigError("'training' must be a mapping")
    unknown = set(user_training) - set(DEFAULT_TRAINING)
    if unknown:
        raise TrainingConfigError(
            f"unknown training keys {sorted(unknown)}; known keys are {sorted(DEFAULT_TRAINING)}"
        )
    weights = dict(training["weights"])
    weights.update(user_training.get("weights") or {})
    training.update(user_training)
    training["weights"] = weights
    merged["training"] = training

    if merged["data"] is None:
        raise TrainingConfigError("config needs 'data': the path of an extxyz data set")
    if merged["output_dir"] is None:
        raise TrainingConfigError("config needs 'output_dir': where checkpoints and metrics go")
    if merged["dtype"] not in _DTYPES:
        raise TrainingConfigError(f"dtype must be 'float32' or 'float64', got {merged['dtype']!r}")
    fraction = training["augmentation_fraction"]
    if not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) <= 1.0:
        raise TrainingConfigError(f"augmentation_fraction must be in [0, 1], got {fraction!r}")
    for key in ("epochs", "batch_size"):
        value = training[key]
        if not isinstance(value, int) or value < 1:
            raise TrainingConfigError(f"training.{key} must be a positive integer, got {value!r}")
    if not float(training["learning_rate"]) > 0:
        raise TrainingConfigError(f"learning_rate must be > 0, got {training['learning_rate']!r}")
    if training["scheduler"] not in ("cosine", "step", "none"):
        raise TrainingConfigError(
            f"scheduler must be 'cosine', 'step' or 'none', got {training['scheduler']!r}"
        )
    unknown = set(weights) - {"energy", "forces", "stress", "direct_forces", "equigrad"}
    if unknown:
        raise TrainingConfigError(f"unknown loss weights {sorted(unknown)}")
    for key, value in weights.items():
        if not isinstance(value, (int, float)) or value < 0:
            raise TrainingConfigError(f"loss weight '{key}' must be a number >= 0, got {value!r}")
    split = merged["split"]
    if not isinstance(split, dict) or set(split) != {"train", "validation", "test"}:
        raise TrainingConfigError("split must have exactly the keys train, validation, test")
    if any(float(v) < 0 for v in split.values()) or float(split["train"]) <= 0:
        raise TrainingConfigError(f"split fractions must be >= 0 (train > 0), got {split}")
    if merged["resume"] not in ("auto", True, False):
        raise TrainingConfigError(f"resume must be auto, true or false, got {merged['resume']!r}")
    if merged["probes"] is not None:
        if not isinstance(merged["probes"], dict) or set(merged["probes"]) - set(DEFAULT_PROBES):
            raise TrainingConfigError(f"probes must be a mapping with keys among {sorted(DEFAULT_PROBES)}")
        probes = dict(DEFAULT_PROBES)
        probes.update(merged["probes"])
        for key, value in probes.items():
            if not isinstance(value, int) or value < (0 if key == "lmax" else 1):
                raise TrainingConfigError(f"probes.{key} must be a positive integer, got {value!r}")
        merged["probes"] = probes
    from ase_symdiag.reference.pet import DEFAULT_HYPERS

    unknown = set(merged["model"] or {}) - set(DEFAULT_HYPERS)
    if unknown:
        raise TrainingConfigError(
            f"unknown model hyper-parameters {sorted(unknown)}; known are {sorted(DEFAULT_HYPERS)}"
        )
    return merged


# --------------------------------------------------------------------------- data


class Sample:
    """One structure with its precomputed graph and labels (float64 torch tensors)."""

    def __init__(self, atoms, species: np.ndarray, cutoff: float) -> None:
        from ase.neighborlist import neighbor_list

        from ase_symdiag.reference.pet import reverse_pair_index

        self.n_atoms = len(atoms)
        self.species = torch.tensor(species, dtype=torch.long)
        self.positions = torch.tensor(atoms.positions, dtype=torch.float64)
        self.cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
        self.periodic = bool(np.all(atoms.pbc))
        self.volume = float(abs(np.linalg.det(atoms.cell.array))) if self.periodic else 0.0
        i, j, shifts = neighbor_list("ijS", atoms, cutoff)
        self.first = torch.tensor(i, dtype=torch.long)
        self.second = torch.tensor(j, dtype=torch.long)
        self.shifts = torch.tensor(shifts, dtype=torch.float64)
        self.reverse = reverse_pair_index(
            self.first, self.second, torch.tensor(shifts, dtype=torch.long), self.n_atoms
        )
        self.energy = float(atoms.info["energy"])
        forces = atoms.arrays.get("forces")
        self.forces = None if forces is None else torch.tensor(forces, dtype=torch.float64)
        stress = atoms.info.get("stress")
        self.stress = (
            torch.tensor(np.asarray(stress).reshape(3, 3), dtype=torch.float64)
            if stress is not None and self.periodic
            else None
        )


def load_samples(path: str, atomic_types: Optional[List[int]], cutoff: float, max_structures=None):
    """Read a data set and build :class:`Sample` objects (graphs computed once)."""
    from ase_symdiag.reference.data import read_dataset

    images = read_dataset(path)
    if max_structures is not None:
        images = images[: int(max_structures)]
    if len(images) == 0:
        raise TrainingConfigError(f"data set '{path}' is empty")
    if atomic_types is None:
        atomic_types = sorted({int(z) for atoms in images for z in atoms.numbers})
    index = {t: k for k, t in enumerate(atomic_types)}
    samples = []
    for k, atoms in enumerate(images):
        missing = sorted({int(z) for z in atoms.numbers} - set(index))
        if missing:
            raise TrainingConfigError(f"{path}: structure {k} has atomic types {missing} unknown to the model")
        species = np.array([index[int(z)] for z in atoms.numbers])
        samples.append(Sample(atoms, species, cutoff))
    return images, samples, atomic_types


def split_indices(n: int, split: dict, seed: int):
    """Seeded random train/validation/test split of ``range(n)``."""
    total = sum(float(v) for v in split.values())
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * float(split["validation"]) / total))
    n_test = int(round(n * float(split["test"]) / total))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise TrainingConfigError(f"split {split} leaves no training structures out of {n}")
    return order[:n_train].tolist(), order[n_train : n_train + n_val].tolist(), order[n_train + n_val :].tolist()


def _collate(samples: List[Sample], rotations: Optional[List[Optional[np.ndarray]]], dtype):
    """Concatenate structures (optionally each rotated) into one batch of tensors."""
    positions, cells, species, first, second, reverse, shifts = [], [], [], [], [], [], []
    atom_system, edge_system, forces, stresses = [], [], [], []
    energies, n_atoms, stress_mask, volumes = [], [], [], []
    atom_offset = 0
    edge_offset = 0
    for b, sample in enumerate(samples):
        pos, cell = sample.positions, sample.cell
        f, s = sample.forces, sample.stress
        rotation = None if rotations is None else rotations[b]
        if rotation is not None:
            r = torch.tensor(rotation, dtype=torch.float64)
            pos = pos @ r.T
            cell = cell @ r.T
            f = None if f is None else f @ r.T
            s = None if s is None else r @ s @ r.T
        positions.append(pos)
        cells.append(cell)
        species.append(sample.species)
        first.append(sample.first + atom_offset)
        second.append(sample.second + atom_offset)
        reverse.append(sample.reverse + edge_offset)
        shifts.append(sample.shifts)
        atom_system.append(torch.full((sample.n_atoms,), b, dtype=torch.long))
        edge_system.append(torch.full((len(sample.first),), b, dtype=torch.long))
        forces.append(f if f is not None else torch.full((sample.n_atoms, 3), float("nan"), dtype=torch.float64))
        stresses.append(s if s is not None else torch.zeros(3, 3, dtype=torch.float64))
        stress_mask.append(s is not None)
        volumes.append(sample.volume if sample.volume > 0 else 1.0)
        energies.append(sample.energy)
        n_atoms.append(sample.n_atoms)
        atom_offset += sample.n_atoms
        edge_offset += len(sample.first)
    return {
        "positions": torch.cat(positions).to(dtype),
        "cells": torch.stack(cells).to(dtype),
        "species": torch.cat(species),
        "first": torch.cat(first),
        "second": torch.cat(second),
        "reverse": torch.cat(reverse),
        "shifts": torch.cat(shifts).to(dtype),
        "atom_system": torch.cat(atom_system),
        "edge_system": torch.cat(edge_system),
        "forces": torch.cat(forces).to(dtype),
        "stress": torch.stack(stresses).to(dtype),
        "stress_mask": torch.tensor(stress_mask, dtype=torch.bool),
        "volumes": torch.tensor(volumes, dtype=dtype),
        "energy": torch.tensor(energies, dtype=dtype),
        "n_atoms": torch.tensor(n_atoms, dtype=dtype),
        "n_systems": len(samples),
    }


def predict(
    model, batch: dict, *, forces: bool, stress: bool, create_graph: bool, rotational_gradient: bool = False
) -> dict:
    """Energies (and conservative forces/stress by autograd) of a collated batch.

    With ``rotational_gradient``, also ``"rotational_gradient"`` (n_systems, 3, 3):
    ``A = (W - W^T)/2`` with ``W = dE/d(eps)`` (eV) for the identity strain ``eps``
    that multiplies positions and cell (``x -> x eps``), computed for EVERY structure
    (finite ones too, where the cell does not enter). ``W = V sigma`` for periodic
    structures; a rotation ``x -> x exp(theta K)``, ``K = -K^T``, changes the energy by
    ``theta <A, K>_F``, so ``A = 0`` for an exactly rotation-invariant energy (Orb-v3's
    "equigrad", dE/dG at G = 0 for R = exp(G - G^T), is ``2 A``).
    """
    n_systems = batch["n_systems"]
    dtype = batch["positions"].dtype
    positions = batch["positions"].clone().requires_grad_(forces)
    want_strain = stress or rotational_gradient
    strain = torch.eye(3, dtype=dtype).repeat(n_systems, 1, 1).requires_grad_(want_strain)
    strained = torch.einsum("ni,nij->nj", positions, strain[batch["atom_system"]])
    cells = torch.bmm(batch["cells"], strain)
    vectors = (
        strained[batch["second"]]
        - strained[batch["first"]]
        + torch.einsum("ei,eij->ej", batch["shifts"], cells[batch["edge_system"]])
    )
    out = model.compute(vectors, batch["first"], batch["second"], batch["reverse"], batch["species"])
    energy = torch.zeros(n_systems, dtype=dtype).index_add(0, batch["atom_system"], out["energy"])
    result = {"energy": energy}
    if "non_conservative_force" in out:
        result["direct_forces"] = out["non_conservative_force"]
    inputs = ([positions] if forces else []) + ([strain] if want_strain else [])
    if inputs:
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
        if forces:
            result["forces"] = -grads[0]
        if stress:
            result["stress"] = grads[-1] / batch["volumes"].reshape(-1, 1, 1)
        if rotational_gradient:
            result["rotational_gradient"] = 0.5 * (grads[-1] - grads[-1].transpose(1, 2))
    return result


def _loss(prediction: dict, batch: dict, weights: dict) -> torch.Tensor:
    loss = weights["energy"] * torch.mean(
        ((prediction["energy"] - batch["energy"]) / batch["n_atoms"]) ** 2
    )
    target_forces = batch["forces"]
    has_forces = ~torch.isnan(target_forces[:, 0])
    if "forces" in prediction and bool(has_forces.any()):
        loss = loss + weights["forces"] * torch.mean(
            (prediction["forces"][has_forces] - target_forces[has_forces]) ** 2
        )
    if "direct_forces" in prediction and bool(has_forces.any()) and weights.get("direct_forces", 0) > 0:
        loss = loss + weights["direct_forces"] * torch.mean(
            (prediction["direct_forces"][has_forces] - target_forces[has_forces]) ** 2
        )
    mask = batch["stress_mask"]
    if "stress" in prediction and bool(mask.any()):
        loss = loss + weights["stress"] * torch.mean(
            (prediction["stress"][mask] - batch["stress"][mask]) ** 2
        )
    if "rotational_gradient" in prediction and weights.get("equigrad", 0) > 0:
        loss = loss + weights["equigrad"] * torch.mean(prediction["rotational_gradient"].pow(2).sum(dim=(1, 2)))
    return loss


def evaluate_samples(
    model, samples: List[Sample], dtype, batch_size: int = 16, rotational_gradient: bool = False
) -> dict:
    """MAE/RMSE of energy (meV/atom), forces (meV/Å), stress (meV/Å^3, GPa) and, with
    the direct head, direct forces, on unrotated ``samples``. With
    ``rotational_gradient``, also ``rotational_gradient_eV``: ``mean_sq`` (the equigrad
    penalty, mean of ``||A||_F^2``, eV^2), ``rms`` and ``max`` of ``||A||_F`` (eV)."""
    from ase.units import GPa

    e_err, f_err, s_err, d_err, a_norm = [], [], [], [], []
    want_stress = any(s.stress is not None for s in samples)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = _collate(chunk, None, dtype)
        prediction = predict(
            model, batch, forces=True, stress=want_stress, create_graph=False, rotational_gradient=rotational_gradient
        )
        if rotational_gradient:
            a_norm.append(prediction["rotational_gradient"].detach().double().pow(2).sum(dim=(1, 2)).sqrt())
        e_err.append(((prediction["energy"] - batch["energy"]) / batch["n_atoms"]).detach().double())
        has_forces = ~torch.isnan(batch["forces"][:, 0])
        f_err.append((prediction["forces"] - batch["forces"])[has_forces].detach().double().reshape(-1))
        if "direct_forces" in prediction:
            d_err.append((prediction["direct_forces"] - batch["forces"])[has_forces].detach().double().reshape(-1))
        if want_stress and bool(batch["stress_mask"].any()):
            mask = batch["stress_mask"]
            s_err.append((prediction["stress"] - batch["stress"])[mask].detach().double().reshape(-1))

    def stats(errors: List[torch.Tensor], scale: float) -> Optional[dict]:
        if not errors:
            return None
        e = torch.cat(errors) * scale
        if e.numel() == 0:
            return None
        return {"mae": float(e.abs().mean()), "rmse": float(torch.sqrt((e**2).mean()))}

    metrics = {
        "n_structures": len(samples),
        "energy_meV_per_atom": stats(e_err, 1000.0),
        "forces_meV_per_A": stats(f_err, 1000.0),
    }
    if s_err:
        metrics["stress_meV_per_A3"] = stats(s_err, 1000.0)
        metrics["stress_GPa"] = stats(s_err, 1.0 / GPa)
    if d_err:
        metrics["direct_forces_meV_per_A"] = stats(d_err, 1000.0)
    if a_norm:
        a = torch.cat(a_norm)
        metrics["rotational_gradient_eV"] = {
            "mean_sq": float((a**2).mean()),
            "rms": float(torch.sqrt((a**2).mean())),
            "max": float(a.max()),
        }
    return metrics


# --------------------------------------------------------------------------- checkpoints


def probe_representations(model, structures, lmax: int) -> dict:
    """Per-layer symmetry content of ``model`` (a :class:`~ase_symdiag.reference.pet.PET`) on ``structures``.

    The model is exported in memory and analysed by
    :func:`ase_symdiag.metrics.representations.representation_content` on the smallest
    quadrature exact to ``2 lmax``. Returns ``{layer: {"invariant_fraction", "fractions"}}``.
    """
    from ase_symdiag.reference.pet import export_pet
    from ase_symdiag.metrics.representations import representation_content

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


def _atomic_torch_save(obj: Any, path: str) -> None:
    from ase_symdiag.report import atomic_write

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _atomic_json(obj: Any, path: str) -> None:
    from ase_symdiag.report import write_json

    write_json(path, obj)


def load_checkpoint(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"could not read checkpoint '{path}': {error}") from None


def model_from_checkpoint(checkpoint, which: str = "best"):
    """Rebuild the PET of a checkpoint (dict or path); ``which`` = best | last."""
    from ase_symdiag.reference.pet import build_pet

    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint(checkpoint)
    if which not in ("best", "last"):
        raise CheckpointError(f"which must be 'best' or 'last', got {which!r}")
    model = build_pet(checkpoint["atomic_types"], checkpoint["hypers"])
    model = model.to(_DTYPES[checkpoint["dtype"]])
    state = checkpoint["best_state"] if which == "best" and checkpoint.get("best_state") else checkpoint["model_state"]
    model.load_state_dict(state)
    return model.eval()


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


# --------------------------------------------------------------------------- training


def train(config: dict) -> dict:
    """Train a PET from ``config`` (see module docstring). Returns the final metrics dict."""
    from tqdm.auto import tqdm

    from ase_symdiag.reference.pet import build_pet, fit_composition
    from ase_symdiag.reference.data import force_rms

    config = validate_config(config)
    training = config["training"]
    dtype = _DTYPES[config["dtype"]]
    torch.set_num_threads(int(config["num_threads"]))
    output_dir = _resolve(config, config["output_dir"])
    checkpoint_path = os.path.join(output_dir, "checkpoint.pt")
    metrics_path = os.path.join(output_dir, "metrics.json")
    data_path = _resolve(config, config["data"])
    if not os.path.exists(data_path):
        raise TrainingConfigError(
            f"data file '{data_path}' does not exist (generate it with "
            "python -m ase_symdiag.reference.data)"
        )

    hypers = dict(config["model"] or {})
    from ase_symdiag.reference.pet import DEFAULT_HYPERS

    full_hypers = dict(DEFAULT_HYPERS)
    full_hypers.update(hypers)

    resume = config["resume"]
    checkpoint = None
    if resume is True or (resume == "auto" and os.path.exists(checkpoint_path)):
        checkpoint = load_checkpoint(checkpoint_path)
        if checkpoint.get("hypers") != full_hypers or checkpoint.get("dtype") != config["dtype"]:
            raise CheckpointError(
                f"checkpoint '{checkpoint_path}' was written with different model "
                "hyper-parameters or dtype; delete it or set resume: false"
            )

    atomic_types = checkpoint["atomic_types"] if checkpoint else None
    images, samples, atomic_types = load_samples(
        data_path, atomic_types, float(full_hypers["cutoff"]), config["max_structures"]
    )
    seed = int(config["seed"])
    train_idx, val_idx, test_idx = split_indices(len(samples), config["split"], seed)
    train_samples = [samples[i] for i in train_idx]
    val_samples = [samples[i] for i in val_idx]
    test_samples = [samples[i] for i in test_idx]
    probe_structures = []
    if config["probes"] is not None:
        from ase_symdiag.structures import from_atoms

        probe_source = list(val_idx) or list(train_idx)
        probe_structures = [
            from_atoms(images[i], label=f"probe{k}") for k, i in enumerate(probe_source[: config["probes"]["structures"]])
        ]

    torch.manual_seed(seed)
    model = build_pet(atomic_types, full_hypers)
    if checkpoint is None:
        counts = np.zeros((len(train_idx), len(atomic_types)))
        for row, sample in enumerate(train_samples):
            counts[row] = np.bincount(sample.species.numpy(), minlength=len(atomic_types))
        energies = np.array([s.energy for s in train_samples])
        train_forces = [images[i] for i in train_idx if "forces" in images[i].arrays]
        scale = force_rms(train_forces) if train_forces else 1.0
        model.energy_scale.fill_(max(scale, 1e-3))
        # composition baseline: least squares on what the freshly initialised network
        # does not already predict, so that training starts from zero mean error
        initial = np.zeros(len(train_samples))
        with torch.no_grad():
            for start in range(0, len(train_samples), 16):
                batch = _collate(train_samples[start : start + 16], None, torch.float64)
                out = predict(model.double(), batch, forces=False, stress=False, create_graph=False)
                initial[start : start + 16] = out["energy"].numpy()
        composition = fit_composition(counts, energies - initial)
        model.composition.copy_(torch.tensor(composition, dtype=torch.float64))
    model = model.to(dtype)

    optimizer = torch.optim.Adam(model.parameters(), lr=float(training["learning_rate"]))
    epochs = int(training["epochs"])
    if training["scheduler"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs, eta_min=float(training["min_learning_rate"])
        )
    elif training["scheduler"] == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=int(training["step_size"]), gamma=float(training["gamma"])
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    rng = np.random.default_rng(seed + 1)
    start_epoch = 0
    history: List[dict] = []
    best_val = math.inf
    best_state = None
    elapsed = 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        scheduler.load_state_dict(checkpoint["scheduler_state"])
        rng.bit_generator.state = checkpoint["numpy_rng_state"]
        torch.set_rng_state(checkpoint["torch_rng_state"])
        start_epoch = int(checkpoint["epoch"])
        history = list(checkpoint["history"])
        best_val = float(checkpoint["best_val"])
        best_state = checkpoint["best_state"]
        elapsed = float(checkpoint["elapsed_s"])

    weights = {k: float(v) for k, v in training["weights"].items()}
    fraction = float(training["augmentation_fraction"])
    batch_size = int(training["batch_size"])
    want_stress = weights["stress"] > 0 and any(s.stress is not None for s in train_samples)
    want_equigrad = weights.get("equigrad", 0.0) > 0
    time_limit = training["time_limit_s"]
    session_start = time.perf_counter()

    bar = tqdm(
        total=epochs,
        initial=start_epoch,
        desc=config["name"],
        disable=not config["progress"],
        dynamic_ncols=True,
    )
    stopped_early = False
    for epoch in range(start_epoch, epochs):
        epoch_start = time.perf_counter()
        model.train()
        order = rng.permutation(len(train_samples))
        n_rotated = 0
        train_loss = 0.0
        train_equigrad = 0.0
        # the energy weight ramps up linearly over energy_warmup_epochs (forces first:
        # this architecture plateaus when the energy term dominates early on)
        warmup = int(training["energy_warmup_epochs"])
        epoch_weights = dict(weights)
        if warmup > 0:
            epoch_weights["energy"] = weights["energy"] * min(1.0, epoch / warmup)
        for start in range(0, len(order), batch_size):
            chunk = [train_samples[i] for i in order[start : start + batch_size]]
            rotation_seed = int(rng.integers(0, 2**31 - 1))
            candidates = haar_rotations(len(chunk), seed=rotation_seed)
            apply = rng.random(len(chunk)) < fraction
            rotations = [candidates[b] if apply[b] else None for b in range(len(chunk))]
            n_rotated += int(apply.sum())
            batch = _collate(chunk, rotations, dtype)
            prediction = predict(
                model, batch, forces=weights["forces"] > 0, stress=want_stress, create_graph=True,
                rotational_gradient=want_equigrad,
            )
            loss = _loss(prediction, batch, epoch_weights)
            if want_equigrad:
                train_equigrad += float(prediction["rotational_gradient"].detach().pow(2).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if training["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(training["grad_clip"]))
            optimizer.step()
            train_loss += float(loss.detach()) * len(chunk)
        scheduler.step()
        model.eval()
        if val_samples:
            val_metrics = evaluate_samples(model, val_samples, dtype, rotational_gradient=True)
            val_score = (val_metrics["energy_meV_per_atom"]["rmse"] / 1000.0) ** 2 * weights["energy"]
            if val_metrics["forces_meV_per_A"] is not None:
                val_score += (val_metrics["forces_meV_per_A"]["rmse"] / 1000.0) ** 2 * max(weights["forces"], weights.get("direct_forces", 0.0))
        else:
            val_metrics, val_score = None, train_loss
        if val_score < best_val:
            best_val = val_score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elapsed += time.perf_counter() - epoch_start
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss / len(train_samples),
            "val_score": val_score,
            "learning_rate": optimizer.param_groups[0]["lr"],
            "rotated_fraction": n_rotated / len(train_samples),
            "elapsed_s": elapsed,
        }
        if val_metrics is not None:
            record["val_energy_rmse_meV_per_atom"] = val_metrics["energy_meV_per_atom"]["rmse"]
            if val_metrics["forces_meV_per_A"] is not None:
                record["val_forces_rmse_meV_per_A"] = val_metrics["forces_meV_per_A"]["rmse"]
            record["val_rotational_gradient_rms_eV"] = val_metrics["rotational_gradient_eV"]["rms"]
        if want_equigrad:
            record["train_equigrad_eV2"] = train_equigrad / len(train_samples)
        probes = config["probes"]
        if probes is not None and probe_structures and (
            epoch == 0 or (epoch + 1) % probes["every"] == 0 or epoch + 1 == epochs
        ):
            record["representations"] = probe_representations(model, probe_structures, probes["lmax"])
        history.append(record)
        _atomic_torch_save(
            {
                "epoch": epoch + 1,
                "config": config,
                "hypers": full_hypers,
                "atomic_types": list(atomic_types),
                "dtype": config["dtype"],
                "model_state": model.state_dict(),
                "best_state": best_state,
                "best_val": best_val,
                "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict(),
                "numpy_rng_state": rng.bit_generator.state,
                "torch_rng_state": torch.get_rng_state(),
                "history": history,
                "elapsed_s": elapsed,
            },
            checkpoint_path,
        )
        bar.update(1)
        bar.set_postfix(
            loss=f"{record['train_loss']:.3g}",
            E=f"{record.get('val_energy_rmse_meV_per_atom', float('nan')):.2f}",
            F=f"{record.get('val_forces_rmse_meV_per_A', float('nan')):.0f}",
        )
        if time_limit is not None and time.perf_counter() - session_start > float(time_limit) and epoch + 1 < epochs:
            stopped_early = True
            break
    bar.close()

    final = model_from_checkpoint(checkpoint_path, "best")
    test_metrics = evaluate_samples(final, test_samples, dtype, rotational_gradient=True) if test_samples else None
    data_force_rms = force_rms([a for a in images if "forces" in a.arrays]) if images else None
    stresses = [a.info["stress"] for a in images if "stress" in a.info]
    metrics = {
        "name": config["name"],
        "data": data_path,
        "n_structures": {"train": len(train_samples), "validation": len(val_samples), "test": len(test_samples)},
        "epochs_completed": len(history),
        "epochs_planned": epochs,
        "stopped_by_time_limit": stopped_early,
        "training_time_s": elapsed,
        "augmentation_fraction": fraction,
        "hypers": full_hypers,
        "dtype": config["dtype"],
        "data_force_rms_eV_per_A": data_force_rms,
        "data_energy_std_meV_per_atom": float(np.std([a.info["energy"] / len(a) for a in images]) * 1000.0),
        "data_stress_rms_GPa": float(np.sqrt(np.mean(np.square(stresses))) / _gpa()) if stresses else None,
        "test": test_metrics,
        "validation_best_score": best_val,
        "n_parameters": int(sum(p.numel() for p in final.parameters())),
    }
    export = _resolve(config, config["export"])
    if export is not None and not stopped_early:
        from ase_symdiag.reference.pet import export_pet

        export_pet(
            final,
            export,
            name=config["name"],
            description=(
                f"{config['name']}: unconstrained PET trained on {os.path.basename(data_path)} "
                f"with augmentation_fraction={fraction}"
            ),
        )
        metrics["exported"] = export
    _atomic_json(metrics, metrics_path)
    return metrics


def _gpa() -> float:
    from ase.units import GPa

    return GPa


# --------------------------------------------------------------------------- CLI


def _run_train(args) -> int:
    config = load_config(args.config)
    if args.no_progress:
        config["progress"] = False
    if args.fresh:
        config["resume"] = False
    metrics = train(config)
    test = metrics.get("test") or {}

    def fmt(entry):
        return "n/a" if not entry else f"MAE {entry['mae']:.3f} RMSE {entry['rmse']:.3f}"

    print(f"{metrics['name']}: {metrics['epochs_completed']}/{metrics['epochs_planned']} epochs, {metrics['training_time_s']:.0f} s")
    print(f"  test energy (meV/atom): {fmt(test.get('energy_meV_per_atom'))}")
    print(f"  test forces (meV/Å):    {fmt(test.get('forces_meV_per_A'))}")
    if test.get("stress_GPa"):
        print(f"  test stress (GPa):      {fmt(test.get('stress_GPa'))}")
    if metrics.get("exported"):
        print(f"  exported to {metrics['exported']}")
    return 0


def _run_export(args) -> int:
    from ase_symdiag.reference.pet import export_pet

    checkpoint = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint, args.which)
    name = args.name or checkpoint.get("config", {}).get("name", "pet")
    export_pet(model, args.output, name=name, dtype=args.dtype)
    print(f"exported {args.which} model of {args.checkpoint} to {args.output}")
    return 0


def add_train_cli(subparsers) -> None:
    """Add ``train CONFIG`` to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "train", help="train a reference PET model from a YAML/TOML config (resumable)"
    )
    parser.add_argument("config", help="YAML or TOML training config")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--fresh", action="store_true", help="ignore an existing checkpoint and start over"
    )
    parser.set_defaults(run=_run_train)


def probe_history(checkpoint_path: str) -> Dict[str, List[tuple]]:
    """``{layer: [(epoch, invariant_fraction), ...]}`` from a checkpoint's probes."""
    history = load_checkpoint(checkpoint_path)["history"]
    out: Dict[str, List[tuple]] = {}
    for record in history:
        for layer, content in (record.get("representations") or {}).items():
            out.setdefault(layer, []).append((record["epoch"], content["invariant_fraction"]))
    return out


def plot_probe_history(histories: Dict[str, Dict[str, List[tuple]]], path: str) -> None:
    """1 - invariant fraction of each layer against epoch (log scale), one line per run and layer."""
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


def _run_history(args) -> int:
    from ase_symdiag.report import format_table, write_json

    histories = {}
    for path in args.checkpoints:
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint '{path}' does not exist")
        label = os.path.basename(os.path.dirname(os.path.abspath(path)))
        histories[label] = probe_history(path)
        if not histories[label]:
            raise CheckpointError(f"{path}: no probes recorded (set 'probes:' in the training config)")
    rows = []
    for label, layers in histories.items():
        for layer, points in sorted(layers.items()):
            for epoch, fraction in points:
                rows.append([label, layer, epoch, fraction, 1.0 - fraction])
    print(format_table(["run", "layer", "epoch", "invariant", "1 - invariant"], rows))
    if args.json:
        write_json(args.json, {label: {layer: [list(p) for p in points] for layer, points in layers.items()} for label, layers in histories.items()})
    if args.plot:
        plot_probe_history(histories, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def add_history_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "training-history",
        help="per-layer invariant fraction against epoch, from training checkpoints",
        description=(
            "Read the symmetry-content probes recorded by 'ase-symdiag train' (config key "
            "'probes') from one or more checkpoints, e.g. with and without augmentation, "
            "print them and plot 1 - invariant fraction of each layer against epoch."
        ),
    )
    p.add_argument("checkpoints", nargs="+", help="checkpoint.pt files")
    p.add_argument("--json", metavar="OUT", help="write the histories as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot against epoch")
    p.set_defaults(run=_run_history)


def add_export_cli(subparsers) -> None:
    """Add ``export CHECKPOINT OUT.pt`` to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "export", help="export a training checkpoint as a metatomic model (.pt)"
    )
    parser.add_argument("checkpoint", help="checkpoint.pt written by 'train'")
    parser.add_argument("output", help="output model file (.pt)")
    parser.add_argument("--which", choices=["best", "last"], default="best")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None)
    parser.add_argument("--name", default=None)
    parser.set_defaults(run=_run_export)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ase_symdiag.reference.training")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_cli(subparsers)
    add_export_cli(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SymDiagError as error:
        print(f"error: {error}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
