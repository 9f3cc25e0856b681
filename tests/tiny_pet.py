"""A tiny reference-PET configuration shared by the PET, training and equigrad tests."""

from ase_symdiag import SymDiagCalculator

TINY = {"d_model": 16, "n_heads": 2, "n_layers": 2, "d_feedforward": 16, "cutoff": 4.5}


def tiny_config(tmp_path, data, **training):
    return {
        "name": "tiny",
        "data": str(data),
        "output_dir": str(tmp_path / "run"),
        "seed": 3,
        "dtype": "float64",
        "split": {"train": 0.75, "validation": 0.125, "test": 0.125},
        "model": dict(TINY),
        "training": dict({"epochs": 2, "batch_size": 4, "augmentation_fraction": 0.5}, **training),
        "progress": False,
    }


def metatomic_calculator(path):
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(path)


def both_calculators(path, atoms):
    """(energy, forces, stress-or-None) from MetatomicCalculator and SymDiagCalculator."""
    out = []
    for calc in (metatomic_calculator(path), SymDiagCalculator(path)):
        a = atoms.copy()
        a.calc = calc
        stress = a.get_stress() if a.pbc.all() else None
        out.append((a.get_potential_energy(), a.get_forces(), stress))
    return out
