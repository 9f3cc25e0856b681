"""Rotational spread as an uncertainty on the shipped models' held-out data.

For every shipped reference PET (models/{ethanol-xtb,cu-emt}-*.pt) the test split of
its training config (the same seeded split the trainer used: ``split_indices`` of
its ``split`` and ``seed``) is evaluated by
:func:`ase_symdiag.drivers.uncertainty.rotational_uncertainty`: Spearman correlation of
the rotational spread with the error of the unrotated prediction against the
reference (per structure and per atom), the fraction of errors within 1, 2, 3 spreads,
and the calibration curve. The shipped models have no ``energy_uncertainty`` output
(metatrain's LLPR needs a metatrain model: ``bench/pet_study.py`` compares the two on
its metatrain PETs). ``bench/pet_study.py --doc`` puts this table in docs/pet_study.md.

    python bench/rotational_uncertainty.py --out /tmp/uncertainty [--quadrature lebedev:2]
"""

import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["ethanol-xtb-plain", "ethanol-xtb-augmented", "ethanol-xtb-equigrad", "cu-emt-plain", "cu-emt-augmented"]


def held_out(name: str):
    """The test structures of model ``name`` and their reference values."""
    import yaml

    from ase_symdiag.metrics.uncertainty import reference_values
    from ase_symdiag.reference.samples import split_indices
    from ase_symdiag.structures import from_atoms_list, read_atoms

    with open(os.path.join(ROOT, "models", f"{name}.yaml")) as handle:
        config = yaml.safe_load(handle)
    images = read_atoms(os.path.join(ROOT, "models", config["data"]))
    _, _, test = split_indices(len(images), config["split"], config["seed"])
    images = [images[i] for i in test]
    references = [reference_values(atoms) for atoms in images]
    return from_atoms_list(images, [f"{name}-test-{i}" for i in test]), references


def measure(name: str, quadrature: str = "lebedev:2"):
    """The :class:`~ase_symdiag.metrics.uncertainty.UncertaintyReport` of shipped model ``name`` on its held-out split."""
    from ase_symdiag.drivers.uncertainty import rotational_uncertainty

    structures, references = held_out(name)
    return rotational_uncertainty(
        os.path.join(ROOT, "models", f"{name}.pt"), structures,
        [e for e, _ in references], [f for _, f in references], quadrature=quadrature,
    )


def main() -> int:
    import torch

    from ase_symdiag.plots import plot_calibration

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quadrature", default="lebedev:2")
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for name in args.models:
        report = measure(name, args.quadrature)
        print(f"== {name}: {report.n_structures} held-out structures")
        print(report.table(), flush=True)
        results[name] = report.to_dict()
        plot_calibration(report, os.path.join(args.out, f"calibration-{name}.png"))
    with open(os.path.join(args.out, "uncertainty.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
