"""Orb-v3-style "equigrad" rotational-gradient penalty (ase_symdiag.reference.loss, issue 6).

``predict(..., rotational_gradient=True)`` returns ``A = (W - W^T)/2`` with
``W = dE/d(eps)`` for an identity strain ``eps`` on positions and cell; the penalty
``weights.equigrad * mean ||A||_F^2`` is added to the training loss.
"""

import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy.linalg import expm

from tiny_pet import TINY, tiny_config as _tiny_config

from ase_symdiag.reference.pet import build_pet
from ase_symdiag.reference.checkpoints import load_checkpoint, model_from_checkpoint
from ase_symdiag.reference.config import TrainingConfigError, validate_config
from ase_symdiag.reference.loss import evaluate_samples, predict, weighted_loss
from ase_symdiag.reference.samples import Sample, collate, load_samples
from ase_symdiag.reference.training import train

AXIS = torch.tensor([0.3, -0.8, 0.5], dtype=torch.float64)
K_PAIR = 0.7


class _Invariant(torch.nn.Module):
    """E = sum over directed edges of a function of |d| only: exactly invariant."""

    def compute(self, vectors, centers, neighbors, reverse, species):
        r = torch.sqrt((vectors**2).sum(dim=1))
        per_edge = (1.0 + species[neighbors].to(vectors.dtype)) * torch.exp(-r) * torch.cos(r)
        return {"energy": torch.zeros(species.shape[0], dtype=vectors.dtype).index_add(0, centers, per_edge)}


class _Directional(torch.nn.Module):
    """E = k sum over directed edges (d . a)^2: prefers a direction, A known in closed form."""

    def compute(self, vectors, centers, neighbors, reverse, species):
        per_edge = K_PAIR * (vectors @ AXIS.to(vectors.dtype)) ** 2
        return {"energy": torch.zeros(species.shape[0], dtype=vectors.dtype).index_add(0, centers, per_edge)}


def _analytic(batch):
    """A = k (M a a^T - a a^T M), M = sum_e d_e d_e^T per structure.

    W = sum_e d_e^T dE/dd_e = 2k sum_e (d_e . a) d_e a^T = 2k M a a^T, and M, a a^T are
    symmetric, so (W - W^T)/2 = k (M a a^T - a a^T M) = k [M, a a^T].
    """
    cells = batch["cells"][batch["edge_system"]]
    d = (
        batch["positions"][batch["second"]]
        - batch["positions"][batch["first"]]
        + torch.einsum("ei,eij->ej", batch["shifts"], cells)
    )
    m = torch.zeros(batch["n_systems"], 3, 3, dtype=d.dtype).index_add(
        0, batch["edge_system"], d.unsqueeze(2) * d.unsqueeze(1)
    )
    aa = torch.outer(AXIS, AXIS)
    return K_PAIR * (m @ aa - aa @ m)


@pytest.fixture(scope="module")
def samples(tiny_data):  # noqa: F811
    """Periodic Cu structures (with cell shifts) and two finite ethanol molecules."""
    _, cu, _ = load_samples(str(tiny_data), None, TINY["cutoff"])
    finite = []
    for seed in (1, 2):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=seed)
        atoms.info["energy"] = 0.0
        finite.append(Sample(atoms, np.array([{1: 0, 6: 1, 8: 2}[int(z)] for z in atoms.numbers]), TINY["cutoff"]))
    return {"periodic": cu[:3], "finite": finite}


@pytest.mark.parametrize("kind", ["periodic", "finite"])
def test_zero_for_invariant_energy(samples, kind):
    batch = collate(samples[kind], None, torch.float64)
    out = predict(_Invariant(), batch, forces=True, stress=False, create_graph=False, rotational_gradient=True)
    a = out["rotational_gradient"]
    assert a.shape == (len(samples[kind]), 3, 3)
    # the full W is far from zero (the virial), its antisymmetric part is round-off
    w_scale = float(torch.einsum("ni,ni->", batch["positions"], out["forces"]).abs())
    assert w_scale > 1e-2
    assert float(a.abs().max()) < 1e-12 * max(1.0, w_scale)


@pytest.mark.parametrize("kind", ["periodic", "finite"])
def test_closed_form_for_directional_energy(samples, kind):
    batch = collate(samples[kind], None, torch.float64)
    out = predict(_Directional(), batch, forces=False, stress=False, create_graph=False, rotational_gradient=True)
    expected = _analytic(batch)
    assert float(expected.abs().max()) > 1e-1  # not trivially zero
    torch.testing.assert_close(out["rotational_gradient"], expected, rtol=1e-10, atol=1e-10)


def test_finite_system_is_half_the_squared_torque(samples):
    """For a finite system A_ij = -(1/2) sum_n (x_i F_j - x_j F_i), so ||A||_F^2 = |tau|^2 / 2."""
    torch.manual_seed(0)
    model = build_pet([1, 6, 8], TINY).double()
    batch = collate(samples["finite"], None, torch.float64)
    out = predict(model, batch, forces=True, stress=False, create_graph=False, rotational_gradient=True)
    torque = torch.zeros(batch["n_systems"], 3, dtype=torch.float64).index_add(
        0, batch["atom_system"], torch.cross(batch["positions"], out["forces"], dim=1)
    )
    norm2 = out["rotational_gradient"].pow(2).sum(dim=(1, 2))
    assert float(norm2.min()) > 1e-8  # an unconstrained PET does exert a torque
    torch.testing.assert_close(norm2, 0.5 * (torque**2).sum(dim=1), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("kind", ["periodic", "finite"])
def test_is_the_derivative_along_a_rotation(samples, kind):
    """E(x exp(t K)) - E(x exp(-t K)) = 2 t <A, K> + O(t^3), positions AND cell rotated."""
    torch.manual_seed(1)
    model = build_pet([1, 6, 8, 29], TINY).double()
    chunk = samples[kind][:2]
    out = predict(model, collate(chunk, None, torch.float64), forces=False, stress=False, create_graph=False, rotational_gradient=True)
    k = np.array([[0.0, 0.4, -1.0], [-0.4, 0.0, 0.7], [1.0, -0.7, 0.0]])
    t = 1e-4

    def energy(theta):
        r = expm(theta * k).T  # collate applies x r^T = x exp(theta K)
        batch = collate(chunk, [r] * len(chunk), torch.float64)
        return predict(model, batch, forces=False, stress=False, create_graph=False)["energy"]

    finite_difference = (energy(t) - energy(-t)) / (2 * t)
    predicted = torch.einsum("nij,ij->n", out["rotational_gradient"], torch.tensor(k))
    assert float(predicted.abs().min()) > 1e-5
    torch.testing.assert_close(finite_difference, predicted, rtol=1e-5, atol=1e-9)


def test_penalty_backpropagates(samples):
    torch.manual_seed(2)
    model = build_pet([29], TINY).double()
    batch = collate(samples["periodic"], None, torch.float64)
    out = predict(model, batch, forces=True, stress=False, create_graph=True, rotational_gradient=True)
    zero = {"energy": 0.0, "forces": 0.0, "stress": 0.0, "direct_forces": 0.0}
    penalty = weighted_loss(out, batch, dict(zero, equigrad=2.0))
    expected = 2.0 * out["rotational_gradient"].pow(2).sum(dim=(1, 2)).mean()
    torch.testing.assert_close(penalty, expected)
    assert float(weighted_loss(out, batch, dict(zero, equigrad=0.0)).detach()) == 0.0
    penalty.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0.0
    # the parameter gradient of the penalty (a second derivative of E) is the right one
    weight = model.geometry[0].weight
    analytic = float(weight.grad[1, 0])

    def penalty_at(delta):
        with torch.no_grad():
            weight[1, 0] += delta
        out = predict(model, batch, forces=False, stress=False, create_graph=False, rotational_gradient=True)
        with torch.no_grad():
            weight[1, 0] -= delta
        return 2.0 * float(out["rotational_gradient"].pow(2).sum(dim=(1, 2)).mean())

    h = 1e-6
    assert abs(analytic) > 1e-8
    assert (penalty_at(h) - penalty_at(-h)) / (2 * h) == pytest.approx(analytic, rel=1e-5)


def test_weight_is_validated():
    base = {"data": "x.extxyz", "output_dir": "out"}
    config = validate_config(dict(base, training={"weights": {"equigrad": 0.01}}))
    assert config["training"]["weights"]["equigrad"] == 0.01
    assert config["training"]["weights"]["forces"] == 1.0  # other defaults kept
    with pytest.raises(TrainingConfigError, match="equigrad"):
        validate_config(dict(base, training={"weights": {"equigrad": -1.0}}))


def test_training_with_penalty_lowers_rotational_gradient(tmp_path, tiny_data):  # noqa: F811
    """Same seed, no augmentation: the penalty is the only difference."""
    torch.set_num_threads(1)
    norms = {}
    for weight in (0.0, 10.0):
        config = _tiny_config(tmp_path / f"w{weight}", tiny_data, epochs=4, augmentation_fraction=0.0)
        config["training"]["weights"] = {"equigrad": weight}
        metrics = train(config)
        run = tmp_path / f"w{weight}" / "run"
        history = load_checkpoint(str(run / "checkpoint.pt"))["history"]
        assert all("val_rotational_gradient_rms_eV" in record for record in history)
        assert all(("train_equigrad_eV2" in record) == (weight > 0) for record in history)
        assert metrics["test"]["rotational_gradient_eV"]["rms"] >= 0.0
        _, all_samples, _ = load_samples(str(tiny_data), None, TINY["cutoff"])
        model = model_from_checkpoint(str(run / "checkpoint.pt"), "last")
        norms[weight] = evaluate_samples(model, all_samples, torch.float64, rotational_gradient=True)[
            "rotational_gradient_eV"
        ]["rms"]
    assert norms[10.0] < 0.5 * norms[0.0], norms


def test_shipped_equigrad_model_runs_md():
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from repo import ROOT
    from tiny_pet import both_calculators as _both

    MODELS = ROOT / "models"

    from ase_symdiag import SymDiagCalculator

    path = MODELS / "ethanol-xtb-equigrad.pt"
    if not path.exists():
        pytest.skip(f"{path} not shipped")
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=4)
    (e1, f1, _), (e2, f2, _) = _both(str(path), atoms)
    assert abs(e1 - e2) < 1e-6 * max(len(atoms), abs(e1))
    np.testing.assert_allclose(f1, f2, atol=1e-5 * max(1.0, np.abs(f1).max()))
    atoms.calc = SymDiagCalculator(str(path))
    atoms.set_velocities(np.random.default_rng(0).normal(scale=0.01, size=(len(atoms), 3)))
    start = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(20)
    end = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    assert np.isfinite(end) and abs(end - start) < 0.5
