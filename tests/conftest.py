"""Shared fixtures: real exported metatomic models (on disk) and small structures."""

import warnings

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111, molecule
from repo import ROOT

from ase_symdiag.reference.analytic import export_pair_potential

# On the 2-core CI machines torch's two intra-op threads make the small gather/scatter
# kernels of these models ~10x slower than one thread (measured: 3.7 s vs 0.39 s for the
# same autograd loop); the tests run single-threaded.
torch.set_num_threads(1)

#: amplitude of the planted lambda = 2 term, eV/Å^2
KAPPA = 0.01
#: planted direct-force vector, eV/Å
BIAS = (0.05, -0.02, 0.03)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def equivariant_model(model_dir):
    """An exactly O(3)-equivariant Morse pair potential with direct heads."""
    path = model_dir / "equivariant.pt"
    export_pair_potential(path, direct=True)
    return str(path)


@pytest.fixture(scope="session")
def broken_model(model_dir):
    """The same potential with a planted lambda = 2 term of amplitude KAPPA."""
    path = model_dir / "broken.pt"
    export_pair_potential(path, quadrupole=KAPPA)
    return str(path)


@pytest.fixture(scope="session")
def direct_broken_model(model_dir):
    """Equivariant energy, direct forces with a planted lambda = 1 term BIAS."""
    path = model_dir / "direct-broken.pt"
    export_pair_potential(path, direct=True, direct_bias=BIAS)
    return str(path)


@pytest.fixture
def crystal():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture
def triclinic():
    atoms = bulk("Cu", "fcc", a=3.61) * (3, 3, 2)
    atoms.rattle(0.05, seed=5)
    return atoms


@pytest.fixture
def cluster():
    """A 13-atom Cu cluster (non-periodic), rattled."""
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=2)
    return atoms


@pytest.fixture
def slab():
    atoms = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.01, seed=4)
    return atoms


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


#: hyper-parameters of the tiny metatrain PET (random weights; seconds to build)
METATRAIN_PET_HYPERS = dict(
    d_pet=8, d_head=8, d_node=8, d_feedforward=8, num_heads=1, num_attention_layers=1, num_gnn_layers=2, cutoff=4.0,
)


def tiny_metatrain_pet():
    """The tiny metatrain PET of :func:`metatrain_pet` (seed 0, float64), not exported."""
    import copy

    pytest.importorskip("metatrain.pet")
    from metatrain.pet import PET
    from metatrain.utils.architectures import get_default_hypers
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info

    hypers = copy.deepcopy(get_default_hypers("pet")["model"])
    hypers.update(METATRAIN_PET_HYPERS)
    info = DatasetInfo(
        length_unit="Angstrom",
        atomic_types=[1, 6, 8, 29],
        targets={"energy": get_energy_target_info("energy", {"quantity": "energy", "unit": "eV"})},
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = PET(hypers, info).to(torch.float64)
    finally:
        torch.random.set_rng_state(state)
    return model


@pytest.fixture(scope="session")
def metatrain_pet(model_dir):
    """A tiny metatrain PET (H, C, O, Cu) with random weights, exported in float64.

    A real metatrain architecture as users have them (``metatrain==2026.4.1``, the
    ``test`` extra): per-atom ``energy``, ``feature`` and last-layer features.
    """
    path = model_dir / "metatrain-pet.pt"
    tiny_metatrain_pet().export().save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def metatrain_pet_checkpoint(model_dir):
    """The same PET as :func:`metatrain_pet` (same weights) as a metatrain checkpoint
    (``torch.save(model.get_checkpoint(), path)``, what ``load_model`` reads back)."""
    path = model_dir / "metatrain-pet.ckpt"
    torch.save(tiny_metatrain_pet().get_checkpoint(), str(path))
    return str(path)


def _train_metatrain(architecture: dict, data, output, checkpoint_dir) -> None:
    """metatrain's ``train_model`` (what ``mtt train`` runs) of ``architecture`` on the
    energies and forces of the ``data`` file (a quarter for validation), float64, seed 0,
    leaving torch's random state as it was."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # omegaconf's deprecations, at metatrain's import
        from metatrain.cli.train import train_model
        from omegaconf import OmegaConf

    options = {
        "seed": 0,
        "base_precision": 64,
        "device": "cpu",
        "architecture": architecture,
        "training_set": {
            "systems": {"read_from": str(data), "length_unit": "angstrom"},
            "targets": {"energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}},
        },
        "validation_set": 0.25,
        "test_set": 0.0,
        "final_eval": False,
    }
    state = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # metatrain's own warnings (no stress in the data, ...)
        try:
            train_model(OmegaConf.create(options), output=str(output), checkpoint_dir=str(checkpoint_dir))
        finally:
            torch.random.set_rng_state(state)


@pytest.fixture(scope="session")
def metatrain_run(tmp_path_factory):
    """``mtt train`` (metatrain's train_model) of the tiny PET (METATRAIN_PET_HYPERS)
    for 2 epochs on 8 ethanol frames, a checkpoint every epoch: ``(run folder,
    structures file)``; the final checkpoint is ``model.ckpt`` next to the folder."""
    pytest.importorskip("metatrain.pet")
    root = tmp_path_factory.mktemp("mtt")
    data = root / "ethanol.extxyz"
    ase.io.write(data, ase.io.read(ROOT / "models" / "data" / "ethanol-xtb.extxyz", ":8"))
    run = root / "run"
    run.mkdir()
    architecture = {
        "name": "pet",
        "model": dict(METATRAIN_PET_HYPERS),
        "training": {"batch_size": 4, "num_epochs": 2, "checkpoint_interval": 1, "num_workers": 0},
    }
    _train_metatrain(architecture, data, root / "model.pt", run)
    return run, data


@pytest.fixture(scope="session")
def metatrain_llpr(metatrain_run):
    """metatrain's LLPR wrapped around the final model of :func:`metatrain_run`
    (covariance and calibration on the same 8 frames), exported: a PET with
    ``energy_uncertainty``."""
    run, data = metatrain_run
    folder = run.parent / "llpr"
    folder.mkdir()
    architecture = {
        "name": "llpr",
        "training": {"model_checkpoint": str(run.parent / "model.ckpt"), "batch_size": 2, "num_workers": 0},
    }
    _train_metatrain(architecture, data, folder / "llpr.pt", folder)
    return str(folder / "llpr.pt"), data
