"""The reference PET (ase_symdiag.reference.pet), its training loop and the shipped models."""

from repo import ROOT
import math
import os

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from ase_symdiag import SymDiagCalculator, SymDiagError, check_equivariance
from ase_symdiag.reference.pet import build_pet, export_pet
from tiny_pet import TINY, both_calculators as _both, metatomic_calculator, tiny_config as _tiny_config

MODELS = ROOT / "models"
SHIPPED = ["cu-emt-augmented", "cu-emt-plain", "ethanol-xtb-augmented", "ethanol-xtb-plain", "ethanol-xtb-equigrad"]


@pytest.fixture(scope="module")
def pet64(tmp_path_factory):
    """A randomly initialised float64 PET with the direct force head, exported."""
    torch.manual_seed(0)
    model = build_pet([1, 6, 8, 29], dict(TINY, direct_forces=True)).double()
    path = tmp_path_factory.mktemp("pet") / "pet64.pt"
    export_pet(model, path, name="tiny-pet")
    return str(path)


@pytest.fixture
def ethanol_molecule():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=4)
    return atoms


@pytest.mark.parametrize("which", ["crystal", "ethanol_molecule"])
def test_calculators_agree_float64(pet64, which, request):
    atoms = request.getfixturevalue(which)
    (e1, f1, s1), (e2, f2, s2) = _both(pet64, atoms)
    assert abs(e1 - e2) < 1e-10 * max(1.0, abs(e1))
    np.testing.assert_allclose(f1, f2, atol=1e-10)
    assert np.abs(f1).max() > 1e-3  # not trivially zero
    if s1 is not None:
        np.testing.assert_allclose(s1, s2, atol=1e-10)


def test_float32_export_agrees(tmp_path, crystal):
    torch.manual_seed(1)
    model = build_pet([29], TINY)
    path = str(tmp_path / "pet32.pt")
    export_pet(model, path, dtype="float32")
    (e1, f1, _), (e2, f2, _) = _both(path, crystal)
    # float32: the two calculators sum over neighbours in different orders; the
    # energy agrees to 1e-6 eV/atom, forces (through attention gradients) to a few
    # 1e-6 of the largest force
    assert abs(e1 - e2) < 1e-6 * len(crystal)
    np.testing.assert_allclose(f1, f2, atol=1e-5 * max(1.0, np.abs(f1).max()))


def test_forces_are_minus_gradient(pet64, ethanol_molecule, crystal):
    for atoms in (ethanol_molecule, crystal):
        atoms = atoms.copy()
        atoms.calc = SymDiagCalculator(pet64)
        forces = atoms.get_forces()
        h = 1e-5
        for i, c in [(0, 0), (2, 1), (5, 2)]:
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, c] += h
            minus.positions[i, c] -= h
            plus.calc = minus.calc = atoms.calc
            numeric = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
            assert abs(numeric - forces[i, c]) < 1e-6, (i, c, numeric, forces[i, c])


def test_feature_outputs(pet64, crystal):
    from metatomic.torch import ModelOutput

    calc = metatomic_calculator(pet64)
    outputs = {
        f"mtt::features::layer{k}": ModelOutput(sample_kind="atom") for k in range(2)
    }
    outputs["non_conservative_force"] = ModelOutput(sample_kind="atom")
    results = calc.run_model(crystal, outputs)
    for k in range(2):
        block = results[f"mtt::features::layer{k}"].block()
        assert tuple(block.values.shape) == (len(crystal), TINY["d_model"])
        assert block.samples.names == ["system", "atom"]
        assert torch.isfinite(block.values).all()
    # the two layers differ (layer 1 is built on layer 0's messages)
    v0 = results["mtt::features::layer0"].block().values
    v1 = results["mtt::features::layer1"].block().values
    assert not torch.allclose(v0, v1)
    assert tuple(results["non_conservative_force"].block().values.shape) == (len(crystal), 3, 1)


def test_random_model_is_not_equivariant_but_translation_invariant(pet64, crystal, ethanol_molecule):
    report = check_equivariance(pet64, [crystal, ethanol_molecule], n_rotations=8)
    for structure in report.structures:
        assert structure.forces.relative > 1e-4, structure.label
    calc = SymDiagCalculator(pet64)
    for atoms in (crystal, ethanol_molecule):
        a = atoms.copy()
        a.calc = calc
        e0 = a.get_potential_energy()
        b = atoms.copy()
        b.positions += np.array([0.37, -1.21, 2.53])
        b.calc = calc
        assert abs(b.get_potential_energy() - e0) < 1e-10 * max(1.0, abs(e0))


def test_pet_is_smooth_at_the_cutoff():
    """An atom crossing the cutoff changes the energy continuously."""
    torch.manual_seed(2)
    model = build_pet([29], TINY).double()
    from ase_symdiag.reference.pet import reverse_pair_index

    def energy(distance):
        vectors = torch.tensor([[distance, 0.0, 0.0], [-distance, 0.0, 0.0]], dtype=torch.float64)
        vectors = vectors[: 2 if distance < TINY["cutoff"] else 0]
        centers = torch.tensor([0, 1])[: len(vectors)]
        neighbors = torch.tensor([1, 0])[: len(vectors)]
        shifts = torch.zeros(len(vectors), 3, dtype=torch.long)
        reverse = reverse_pair_index(centers, neighbors, shifts, 2)
        out = model.compute(vectors, centers, neighbors, reverse, torch.tensor([0, 0]))
        return float(out["energy"].sum().detach())

    assert abs(energy(TINY["cutoff"] - 1e-7) - energy(TINY["cutoff"] + 1e-3)) < 1e-8


def test_training_runs_checkpoints_and_resumes_exactly(tmp_path, tiny_data):
    from ase_symdiag.reference.checkpoints import load_checkpoint
    from ase_symdiag.reference.training import train

    torch.set_num_threads(1)
    # uninterrupted reference run
    reference = train(_tiny_config(tmp_path / "a", tiny_data))
    ref_ckpt = load_checkpoint(str(tmp_path / "a" / "run" / "checkpoint.pt"))
    assert ref_ckpt["epoch"] == 2
    assert reference["epochs_completed"] == 2
    assert os.path.exists(tmp_path / "a" / "run" / "metrics.json")
    for key in ("energy_meV_per_atom", "forces_meV_per_A", "stress_GPa"):
        assert math.isfinite(reference["test"][key]["rmse"])

    # interrupted after one epoch (time limit 0), then resumed automatically
    config = _tiny_config(tmp_path / "b", tiny_data, time_limit_s=0)
    first = train(config)
    assert first["stopped_by_time_limit"] and first["epochs_completed"] == 1
    assert load_checkpoint(str(tmp_path / "b" / "run" / "checkpoint.pt"))["epoch"] == 1
    resumed = train(_tiny_config(tmp_path / "b", tiny_data))
    assert resumed["epochs_completed"] == 2
    ckpt = load_checkpoint(str(tmp_path / "b" / "run" / "checkpoint.pt"))
    assert ckpt["epoch"] == 2
    for name, value in ref_ckpt["model_state"].items():
        torch.testing.assert_close(ckpt["model_state"][name], value, rtol=1e-9, atol=1e-12)


def test_augmentation_rotates_labels_consistently(tiny_data):
    """A rotated copy collated by the trainer has rotated forces/stress that an
    exactly invariant potential (EMT) would predict."""
    from ase.calculators.emt import EMT

    from ase_symdiag.o3.operations import haar_rotations
    from ase_symdiag.reference.samples import collate, load_samples

    images, samples, _ = load_samples(str(tiny_data), None, 4.5)
    rotation = haar_rotations(2, seed=7)[1]  # improper
    batch = collate(samples[:1], [rotation], torch.float64)
    atoms = images[0].copy()
    atoms.positions = batch["positions"].numpy()
    atoms.cell = batch["cells"][0].numpy()
    atoms.calc = EMT()
    np.testing.assert_allclose(batch["forces"].numpy(), atoms.get_forces(), atol=1e-6)
    np.testing.assert_allclose(batch["stress"][0].numpy(), atoms.get_stress(voigt=False), atol=1e-7)


def test_bad_configs_raise_symdiag_errors(tmp_path, tiny_data):
    from ase_symdiag.reference.training import train

    with pytest.raises(SymDiagError, match="augmentation_fraction"):
        train(_tiny_config(tmp_path, tiny_data, augmentation_fraction=1.5))
    with pytest.raises(SymDiagError, match="does not exist"):
        train(_tiny_config(tmp_path, tmp_path / "missing.extxyz"))
    with pytest.raises(SymDiagError, match="unknown"):
        train(dict(_tiny_config(tmp_path, tiny_data), learning_rate=1.0))


def test_cli_subcommands(tmp_path):
    import argparse

    from ase_symdiag.cli import history, train

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    train.add_parser(sub)
    history.add_parser(sub)
    args = parser.parse_args(["train", "config.yaml", "--fresh"])
    assert args.run is train.run and args.config == "config.yaml" and args.fresh
    args = parser.parse_args(["export", "ckpt.pt", "out.pt", "--which", "last"])
    assert args.run is train.run_export and args.output == "out.pt" and args.which == "last"
    args = parser.parse_args(["training-history", "a.pt", "b.pt", "--json", "h.json"])
    assert args.run is history.run and args.checkpoints == ["a.pt", "b.pt"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_runs_md(name):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    path = MODELS / f"{name}.pt"
    if not path.exists():
        pytest.skip(f"{path} not shipped")
    assert path.stat().st_size < 10 * 1024 * 1024
    if name.startswith("cu"):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.rattle(0.05, seed=1)
    else:
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.02, seed=4)
    (e1, f1, _), (e2, f2, _) = _both(str(path), atoms)
    # float32 models: agreement to float32 round-off: 1e-6 eV/atom (the per-atom
    # energies are summed in different orders) or 1e-6 relative (ethanol's total
    # energy, -310 eV, has a float32 spacing of 3e-5 eV), whichever is larger
    assert abs(e1 - e2) < 1e-6 * max(len(atoms), abs(e1))
    np.testing.assert_allclose(f1, f2, atol=1e-5 * max(1.0, np.abs(f1).max()))

    atoms.calc = SymDiagCalculator(str(path))
    rng = np.random.default_rng(0)
    atoms.set_velocities(rng.normal(scale=0.01, size=(len(atoms), 3)))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs if name.startswith("eth") else 2 * units.fs)
    start = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    dyn.run(20)
    end = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    assert np.isfinite(end)
    assert abs(end - start) < 0.5  # eV: no blow-up
