"""The study on metatrain's PET (issue 22, item 3): with / without rotational
augmentation, per-layer symmetry content through training, the spectrum of the final
breaking, test errors, rotational spread as an uncertainty and MD stability.

For each data set (``models/data/ethanol-xtb.extxyz``, ``models/data/cu-emt.extxyz``)
and variant, a metatrain PET is trained with metatrain's own ``train_model`` (what
``mtt train`` runs), a checkpoint every ``--checkpoint-interval`` epochs, on the
train/validation split of the shipped reference models (``models/<name>-*.yaml``:
same seed, same held-out test structures). Variants:

- ``augmented``: metatrain's default; its PET trainer applies a random O(3)
  operation to every training structure (``metatrain/pet/trainer.py``:
  ``O3Augmenter.apply_random_augmentations`` in the training collate function).
- ``plain``: no augmentation. metatrain 2026.4.1 has no hyper-parameter for it; the
  script replaces ``metatrain.pet.trainer.O3Augmenter`` by a subclass whose
  ``apply_random_augmentations`` returns its inputs unchanged, before training (no
  fork: one attribute of metatrain's module, in this process only).
- an equigrad-style penalty is NOT run: metatrain's losses compare predictions with
  targets, and the rotational gradient of the energy (the antisymmetric part of
  ``dE/d(strain)``) is neither a target nor a loss term there; for periodic data the
  autograd stress compared with a symmetric reference stress penalises the
  antisymmetric part, but the molecules have no stress (docs/pet_study.md).

Per run, under ``--out/<data>-<variant>/``: the metatrain run folder, and
``study.json`` with the training history (per-layer invariant fraction and output
breaking of every checkpoint, :func:`ase_symdiag.drivers.training_history.metatrain_history`),
the spectrum of the final model's breaking (``ase-symdiag spectrum``), test errors and
the rotational spread as an uncertainty
(:func:`ase_symdiag.drivers.uncertainty.rotational_uncertainty`), and ``md/`` from
``ase-symdiag md`` (raw and symmetrized, NVT at ``--md-temperature``).

Training runs are long (hours on CPU at the default sizes); ``--smoke`` runs every
step at toy sizes (1 epoch, 16 structures, 10 MD steps) to check the pipeline.

    python bench/pet_study.py --out /tmp/pet-study [--data ethanol-xtb cu-emt] [--smoke]
"""

import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("augmented", "plain")
#: metatrain PET hyper-parameters of the study (metatrain's defaults otherwise)
MODEL = {"cutoff": 5.0, "d_pet": 64, "d_head": 64, "d_node": 64, "d_feedforward": 128, "num_gnn_layers": 2}
SMOKE_MODEL = {"cutoff": 4.0, "d_pet": 8, "d_head": 8, "d_node": 8, "d_feedforward": 8, "num_heads": 1,
               "num_attention_layers": 1, "num_gnn_layers": 2}


def split(data: str, smoke: bool):
    """``(images, train+validation indices, test indices)`` of the shipped model's split."""
    import yaml

    from ase_symdiag.reference.samples import split_indices
    from ase_symdiag.structures import read_atoms

    with open(os.path.join(ROOT, "models", f"{data}-augmented.yaml")) as handle:
        config = yaml.safe_load(handle)
    images = read_atoms(os.path.join(ROOT, "models", config["data"]))
    train, validation, test = split_indices(len(images), config["split"], config["seed"])
    if smoke:
        train, validation, test = train[:12], validation[:4], test[:4]
    return images, train, validation, test


class _NoAugmentation:
    """Stands in for metatrain's ``O3Augmenter``: every structure as it is."""

    def __init__(self, *args, **kwargs):
        pass

    def apply_random_augmentations(self, systems, targets, extra_data=None):
        return systems, targets, extra_data if extra_data is not None else {}


def train(folder: str, images, train_idx, validation_idx, variant: str, args) -> str:
    """Train one metatrain PET in ``folder``; returns the run folder of its checkpoints."""
    import ase.io
    import metatrain.pet.trainer as pet_trainer
    from metatrain.cli.train import train_model
    from omegaconf import OmegaConf

    data = os.path.join(folder, "train.extxyz")
    ase.io.write(data, [images[i] for i in train_idx + validation_idx])
    run = os.path.join(folder, "run")
    os.makedirs(run, exist_ok=True)
    n = len(train_idx) + len(validation_idx)
    targets = {"energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}}
    if all(atoms.pbc.all() for atoms in images[:1]) and "stress" in images[0].calc.results:
        targets["energy"]["stress"] = {"key": "stress"}
    options = {
        "seed": 0,
        "base_precision": 32 if not args.smoke else 64,
        "device": "cpu",
        "architecture": {
            "name": "pet",
            "model": SMOKE_MODEL if args.smoke else MODEL,
            "training": {
                "batch_size": 8 if not args.smoke else 4,
                "num_epochs": args.epochs,
                "checkpoint_interval": args.checkpoint_interval,
                "learning_rate": 1e-3,
                "num_workers": 0,
            },
        },
        "training_set": {"systems": {"read_from": data, "length_unit": "angstrom"}, "targets": targets},
        "validation_set": len(validation_idx) / n,
        "test_set": 0.0,
        "final_eval": False,
    }
    original = pet_trainer.O3Augmenter
    if variant == "plain":
        pet_trainer.O3Augmenter = _NoAugmentation
    try:
        train_model(OmegaConf.create(options), output=os.path.join(folder, "model.pt"), checkpoint_dir=run)
    finally:
        pet_trainer.O3Augmenter = original
    return run


def study(data: str, variant: str, args) -> dict:
    import ase.io

    from ase_symdiag.cli.app import main as cli
    from ase_symdiag.drivers.training_history import metatrain_history
    from ase_symdiag.drivers.uncertainty import rotational_uncertainty
    from ase_symdiag.metrics.uncertainty import reference_values
    from ase_symdiag.plots import plot_calibration
    from ase_symdiag.structures import from_atoms_list

    folder = os.path.join(args.out, f"{data}-{variant}")
    os.makedirs(folder, exist_ok=True)
    images, train_idx, validation_idx, test_idx = split(data, args.smoke)
    run = train(folder, images, train_idx, validation_idx, variant, args)
    test_images = [images[i] for i in test_idx]
    test_file = os.path.join(folder, "test.extxyz")
    ase.io.write(test_file, test_images)
    structures = from_atoms_list(test_images, [f"test-{i}" for i in test_idx])
    probe = structures[: args.probe_structures]
    history = metatrain_history(run, probe, lmax=2, n_rotations=8, progress=lambda p: print(f"  measuring {p}", flush=True))
    model = os.path.join(folder, "model.pt")
    references = [reference_values(atoms) for atoms in test_images]
    uncertainty = rotational_uncertainty(model, structures, [e for e, _ in references], [f for _, f in references])
    plot_calibration(uncertainty, os.path.join(folder, "calibration.png"))
    spectrum_json = os.path.join(folder, "spectrum.json")
    cli(["spectrum", model, test_file, "--index", f":{args.probe_structures}", "--lmax", "3", "-q", "--json", spectrum_json])
    layers_json = os.path.join(folder, "layers.json")
    cli(["representations", os.path.join(folder, "model.ckpt"), test_file, "--index", f":{args.probe_structures}",
         "--lmax", "2", "-q", "--json", layers_json, "--plot", os.path.join(folder, "layers.png")])
    cli(["md", model, test_file, "--index", "0", "--ensemble", "nvt", "--temperature", str(args.md_temperature),
         "--steps", str(args.md_steps), "--timestep", "0.5", "--quadrature", "lebedev:2", "-q",
         "--out", os.path.join(folder, "md")])
    result = {
        "data": data,
        "variant": variant,
        "history": history.to_dict(),
        "test": {"qualities": uncertainty.to_dict()["qualities"], "structures": uncertainty.per_structure},
        "spectrum": json.load(open(spectrum_json)),
        "layers": json.load(open(layers_json)),
    }
    with open(os.path.join(folder, "study.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    print(uncertainty.table(), flush=True)
    return result


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", nargs="+", default=["ethanol-xtb", "cu-emt"], choices=["ethanol-xtb", "cu-emt"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--checkpoint-interval", type=int, default=25)
    parser.add_argument("--probe-structures", type=int, default=8, help="test structures of the history and spectrum")
    parser.add_argument("--md-steps", type=int, default=20000)
    parser.add_argument("--md-temperature", type=float, default=600.0)
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks the pipeline in minutes")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.checkpoint_interval, args.md_steps, args.probe_structures = 1, 1, 10, 2
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for data in args.data:
        for variant in args.variants:
            print(f"== {data} {variant}", flush=True)
            study(data, variant, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
