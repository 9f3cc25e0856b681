"""Training the reference PET models (:mod:`ase_symdiag.reference.pet`) with rotational augmentation.

``train(config)`` runs a complete, resumable training from a config dict (or a
YAML/TOML file via :func:`ase_symdiag.reference.config.load_config`; keys and
defaults in :mod:`ase_symdiag.reference.config`):

- data: an extxyz file with energies, forces and (optionally) stress, split into
  train/validation/test by ``seed``; neighbour lists are computed ONCE per structure
  and structures are collated into batches by hand (:mod:`ase_symdiag.reference.samples`);
- loss (:mod:`ase_symdiag.reference.loss`): weighted MSE of per-atom energy
  (eV/atom), conservative forces (``-dE/dx``, eV/Å) and conservative stress
  (``dE/de / V``, eV/Å^3, fully periodic structures with a stress label only), plus
  direct forces if the model has the direct head, plus optionally Orb-v3's
  "equigrad" rotational-gradient penalty (weight ``weights.equigrad``, default 0; see
  :func:`~ase_symdiag.reference.loss.predict`): the mean over structures of
  ``||A||_F^2`` (eV^2), ``A = (W - W^T)/2`` the antisymmetric part of
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
  is written atomically after every epoch (:mod:`ase_symdiag.reference.checkpoints`);
  an interrupted run resumes exactly from it (``resume: true``, or automatically
  when the checkpoint exists);
- optional per-layer symmetry-content probes (:mod:`ase_symdiag.reference.probes`);
- at the end, test MAE/RMSE of energy (meV/atom), forces (meV/Å) and stress
  (meV/Å^3 and GPa) go to ``metrics.json`` next to the checkpoint, and the model
  is exported with :func:`ase_symdiag.reference.pet.export_pet` if ``export`` is set.

Command line: ``ase-symdiag train CONFIG`` (:mod:`ase_symdiag.cli.train`).
"""

from __future__ import annotations

import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ase_symdiag.o3.operations import haar_rotations
from ase_symdiag.reference.checkpoints import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from ase_symdiag.reference.config import TrainingConfigError, resolve_path, torch_dtype, validate_config
from ase_symdiag.reference.loss import evaluate_samples, predict, weighted_loss
from ase_symdiag.reference.probes import probe_representations
from ase_symdiag.reference.samples import Sample, collate, load_samples, split_indices
from ase_symdiag.torch_state import torch_seeded, torch_threads


def train(config: dict) -> dict:
    """Train a PET from ``config`` (see module docstring). Returns the final metrics dict.

    torch's thread count (``num_threads``) and global random generator (seeded with
    ``seed``) are set for the training and restored afterwards.
    """
    config = validate_config(config)
    with torch_threads(int(config["num_threads"])), torch_seeded(None):
        return _train(config)


def training_files(config: dict) -> dict:
    """The files a training reads and writes, from a validated config: ``data`` (read),
    ``output_dir`` (read to resume, written), ``checkpoint``, ``metrics`` and ``export``
    (written; ``export`` None unless set)."""
    output_dir = resolve_path(config, config["output_dir"])
    return {
        "data": resolve_path(config, config["data"]),
        "output_dir": output_dir,
        "checkpoint": os.path.join(output_dir, "checkpoint.pt"),
        "metrics": os.path.join(output_dir, "metrics.json"),
        "export": resolve_path(config, config["export"]),
    }


def _train(config: dict) -> dict:
    """:func:`train` of a validated config."""
    from tqdm.auto import tqdm

    from ase_symdiag.reference.pet import DEFAULT_HYPERS, build_pet
    from ase_symdiag.report import write_json

    training = config["training"]
    dtype = torch_dtype(config["dtype"])
    files = training_files(config)
    output_dir, checkpoint_path, metrics_path, data_path = (
        files["output_dir"], files["checkpoint"], files["metrics"], files["data"]
    )
    if not os.path.exists(data_path):
        raise TrainingConfigError(
            f"data file '{data_path}' does not exist (generate it with "
            "python -m ase_symdiag.cli.reference_data)"
        )

    full_hypers = dict(DEFAULT_HYPERS)
    full_hypers.update(dict(config["model"] or {}))

    resume = config["resume"]
    checkpoint = None
    settings = training_settings(config, data_path)
    if resume is True or (resume == "auto" and os.path.exists(checkpoint_path)):
        checkpoint = load_checkpoint(checkpoint_path)
        if checkpoint.get("hypers") != full_hypers or checkpoint.get("dtype") != config["dtype"]:
            raise CheckpointError(
                f"checkpoint '{checkpoint_path}' was written with different model "
                "hyper-parameters or dtype; delete it or set resume: false"
            )
        check_resumable(checkpoint, settings, checkpoint_path)

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

    torch.random.default_generator.manual_seed(seed)  # restored by train()
    model = build_pet(atomic_types, full_hypers)
    if checkpoint is None:
        _initialise(model, train_samples, [images[i] for i in train_idx], len(atomic_types))
    model = model.to(dtype)

    optimizer = torch.optim.Adam(model.parameters(), lr=float(training["learning_rate"]))
    epochs = int(training["epochs"])
    scheduler = _scheduler(optimizer, training, epochs)

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
        # the energy weight ramps up linearly over energy_warmup_epochs (forces first:
        # this architecture plateaus when the energy term dominates early on)
        warmup = int(training["energy_warmup_epochs"])
        epoch_weights = dict(weights)
        if warmup > 0:
            epoch_weights["energy"] = weights["energy"] * min(1.0, epoch / warmup)
        train_loss, train_equigrad, n_rotated = _train_epoch(
            model, optimizer, train_samples, rng, epoch_weights, training, dtype
        )
        scheduler.step()
        model.eval()
        val_metrics, val_score = _validate(model, val_samples, dtype, weights, train_loss)
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
        save_checkpoint(
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
                "settings": settings,
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
        **_data_scales(images),
        "test": test_metrics,
        "validation_best_score": best_val,
        "n_parameters": int(sum(p.numel() for p in final.parameters())),
    }
    export = files["export"]
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
    write_json(metrics_path, metrics)
    return metrics


#: training keys that may change between the sessions of one run
RESUMABLE_CHANGES = ("time_limit_s",)


def training_settings(config: dict, data_path: str) -> dict:
    """What makes two training sessions the same run (stored in the checkpoint; resuming
    with other settings is refused): the data file (its SHA-256) and how much of it is
    used, the split, seed, dtype, model hyper-parameters and the training section
    (except :data:`RESUMABLE_CHANGES`)."""
    import hashlib

    digest = hashlib.sha256()
    with open(data_path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    training = {k: v for k, v in config["training"].items() if k not in RESUMABLE_CHANGES}
    return {
        "data": digest.hexdigest(),
        "max_structures": config["max_structures"],
        "split": {k: float(v) for k, v in config["split"].items()},
        "seed": int(config["seed"]),
        "dtype": config["dtype"],
        "model": dict(config["model"] or {}),
        "training": training,
    }


def check_resumable(checkpoint: dict, settings: dict, path: str) -> None:
    """Raise :class:`CheckpointError` (one line naming what changed) if ``checkpoint``
    was written with other :func:`training_settings`."""
    stored = checkpoint.get("settings")
    if stored is None:  # written before settings were stored: nothing to compare
        return
    changed = []
    for key, value in settings.items():
        before = stored.get(key)
        if key == "training" and isinstance(before, dict):
            for name in sorted(set(value) | set(before)):
                if value.get(name) != before.get(name):
                    changed.append(f"training.{name} {before.get(name)!r} -> {value.get(name)!r}")
        elif before != value:
            changed.append("data file contents" if key == "data" else f"{key} {before!r} -> {value!r}")
    if changed:
        raise CheckpointError(
            f"checkpoint '{path}' was written with other settings (changed: {', '.join(changed)}); "
            "restore them, or start over (--fresh / resume: false)"
        )


def _initialise(model: torch.nn.Module, train_samples: Sequence[Sample], train_images: Sequence, n_types: int) -> None:
    """Energy scale (RMS force of the training data, eV/Å, at least 1e-3) and the
    per-species composition baseline (eV) of a fresh model, in place."""
    from ase_symdiag.reference.data import force_rms
    from ase_symdiag.reference.pet import fit_composition

    counts = np.zeros((len(train_samples), n_types))
    for row, sample in enumerate(train_samples):
        counts[row] = np.bincount(sample.species.numpy(), minlength=n_types)
    energies = np.array([s.energy for s in train_samples])
    train_forces = [atoms for atoms in train_images if "forces" in atoms.arrays]
    scale = force_rms(train_forces) if train_forces else 1.0
    model.energy_scale.fill_(max(scale, 1e-3))
    # composition baseline: least squares on what the freshly initialised network
    # does not already predict, so that training starts from zero mean error
    initial = np.zeros(len(train_samples))
    with torch.no_grad():
        for start in range(0, len(train_samples), 16):
            batch = collate(train_samples[start : start + 16], None, torch.float64)
            out = predict(model.double(), batch, forces=False, stress=False, create_graph=False)
            initial[start : start + 16] = out["energy"].numpy()
    composition = fit_composition(counts, energies - initial)
    model.composition.copy_(torch.tensor(composition, dtype=torch.float64))


def _scheduler(optimizer: torch.optim.Optimizer, training: dict, epochs: int):
    """The learning-rate schedule of ``training["scheduler"]`` (cosine | step | none)."""
    if training["scheduler"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs, eta_min=float(training["min_learning_rate"])
        )
    if training["scheduler"] == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=int(training["step_size"]), gamma=float(training["gamma"])
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def _train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_samples: Sequence[Sample],
    rng: np.random.Generator,
    weights: Dict[str, float],
    training: dict,
    dtype: torch.dtype,
) -> Tuple[float, float, int]:
    """One pass over the shuffled, randomly rotated training set. Returns the summed
    loss (sum over structures of the batch loss), the summed ``||A||_F^2`` (eV^2,
    0 without the equigrad penalty) and the number of rotated structures."""
    model.train()
    order = rng.permutation(len(train_samples))
    fraction = float(training["augmentation_fraction"])
    batch_size = int(training["batch_size"])
    want_stress = weights["stress"] > 0 and any(s.stress is not None for s in train_samples)
    want_equigrad = weights.get("equigrad", 0.0) > 0
    n_rotated = 0
    train_loss = 0.0
    train_equigrad = 0.0
    for start in range(0, len(order), batch_size):
        chunk = [train_samples[i] for i in order[start : start + batch_size]]
        rotation_seed = int(rng.integers(0, 2**31 - 1))
        candidates = haar_rotations(len(chunk), seed=rotation_seed)
        apply = rng.random(len(chunk)) < fraction
        rotations = [candidates[b] if apply[b] else None for b in range(len(chunk))]
        n_rotated += int(apply.sum())
        batch = collate(chunk, rotations, dtype)
        prediction = predict(
            model, batch, forces=weights["forces"] > 0, stress=want_stress, create_graph=True,
            rotational_gradient=want_equigrad,
        )
        loss = weighted_loss(prediction, batch, weights)
        if want_equigrad:
            train_equigrad += float(prediction["rotational_gradient"].detach().pow(2).sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if training["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(training["grad_clip"]))
        optimizer.step()
        train_loss += float(loss.detach()) * len(chunk)
    return train_loss, train_equigrad, n_rotated


def _validate(
    model: torch.nn.Module, val_samples: Sequence[Sample], dtype: torch.dtype, weights: Dict[str, float], train_loss: float
) -> Tuple[Optional[dict], float]:
    """Validation metrics and score (weighted squared RMSEs, eV^2/atom^2 and (eV/Å)^2);
    without validation structures, ``(None, train_loss)``."""
    if not val_samples:
        return None, train_loss
    metrics = evaluate_samples(model, val_samples, dtype, rotational_gradient=True)
    score = (metrics["energy_meV_per_atom"]["rmse"] / 1000.0) ** 2 * weights["energy"]
    if metrics["forces_meV_per_A"] is not None:
        score += (metrics["forces_meV_per_A"]["rmse"] / 1000.0) ** 2 * max(weights["forces"], weights.get("direct_forces", 0.0))
    return metrics, score


def _data_scales(images: Sequence) -> dict:
    """Force RMS (eV/Å), per-atom energy std (meV/atom) and stress RMS (GPa) of the data."""
    from ase.units import GPa

    from ase_symdiag.reference.data import force_rms

    with_forces = [a for a in images if "forces" in a.arrays]
    stresses = [a.info["stress"] for a in images if "stress" in a.info]
    return {
        "data_force_rms_eV_per_A": force_rms(with_forces) if images else None,
        "data_energy_std_meV_per_atom": float(np.std([a.info["energy"] / len(a) for a in images]) * 1000.0),
        "data_stress_rms_GPa": float(np.sqrt(np.mean(np.square(stresses))) / GPa) if stresses else None,
    }
