"""Rotational spread against metatrain's LLPR on the same metatrain PET (issue 22, item 4).

A small metatrain PET (d = 32, 2 GNN layers, metatrain's default augmentation) is
trained on the ethanol data's train/validation split (``bench/pet_study.py``'s
``train``), wrapped by metatrain's ``llpr`` (covariance and calibration on the same
training set), and both uncertainties are measured on the held-out test split by
:func:`ase_symdiag.drivers.uncertainty.rotational_uncertainty`.

    python bench/llpr_comparison.py --out /tmp/llpr [--epochs 30]
"""

import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pet_study  # noqa: E402


def main() -> int:
    import ase.io
    import torch
    from metatrain.cli.train import train_model
    from omegaconf import OmegaConf

    from ase_symdiag.drivers.uncertainty import rotational_uncertainty
    from ase_symdiag.metrics.uncertainty import reference_values
    from ase_symdiag.plots import plot_calibration
    from ase_symdiag.structures import from_atoms_list

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quadrature", default="lebedev:2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    pet_study.MODEL = {"cutoff": 5.0, "d_pet": 32, "d_head": 32, "d_node": 32, "d_feedforward": 64, "num_heads": 2,
                       "num_gnn_layers": 2}
    settings = argparse.Namespace(smoke=False, epochs=args.epochs, checkpoint_interval=args.epochs)
    images, train_idx, validation_idx, test_idx = pet_study.split("ethanol-xtb", smoke=False)
    pet_study.train(args.out, images, train_idx, validation_idx, "augmented", settings)
    llpr = os.path.join(args.out, "llpr")
    os.makedirs(llpr, exist_ok=True)
    options = {
        "seed": 0, "base_precision": 32, "device": "cpu",
        "architecture": {"name": "llpr", "training": {
            "model_checkpoint": os.path.join(args.out, "model.ckpt"), "batch_size": 8, "num_workers": 0}},
        "training_set": {"systems": {"read_from": os.path.join(args.out, "train.extxyz"), "length_unit": "angstrom"},
                         "targets": {"energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}}},
        "validation_set": len(validation_idx) / (len(train_idx) + len(validation_idx)),
        "test_set": 0.0, "final_eval": False,
    }
    train_model(OmegaConf.create(options), output=os.path.join(llpr, "llpr.pt"), checkpoint_dir=llpr)
    test = [images[i] for i in test_idx]
    ase.io.write(os.path.join(args.out, "test.extxyz"), test)
    references = [reference_values(atoms) for atoms in test]
    report = rotational_uncertainty(
        os.path.join(llpr, "llpr.pt"), from_atoms_list(test, [f"test-{i}" for i in test_idx]),
        [e for e, _ in references], [f for _, f in references], quadrature=args.quadrature,
    )
    print(report.table())
    plot_calibration(report, os.path.join(args.out, "calibration.png"))
    with open(os.path.join(args.out, "llpr_comparison.json"), "w") as handle:
        json.dump(report.to_dict(), handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
