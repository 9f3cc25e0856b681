"""The generic point-cloud core against the atomistic path, and on analytic callables."""

import numpy as np
import pytest
import torch

from ase_symdiag import ModelEvaluationError, check_equivariance
from ase_symdiag.backends.metatomic.evaluation import evaluate
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.o3.operations import haar_rotations
from ase_symdiag.backends.pointcloud import OutputRule, evaluate_rotated
from ase_symdiag.pointcloud.diagnostics import (
    equivariance_errors,
    errors_table,
    layer_content,
    output_spectra,
    spectra_table,
)
from ase_symdiag.o3.quadrature import smallest_exact_quadrature
from ase_symdiag.reference.analytic import export_pair_potential
from ase_symdiag.drivers.representations import representation_content
from ase_symdiag.drivers.spectrum import structure_spectrum
from ase_symdiag.structures import Structure, from_atoms

KAPPA = 0.01


@pytest.fixture(scope="module")
def featured_model(tmp_path_factory):
    """The Morse potential with the planted lambda = 2 term and planted features."""
    path = tmp_path_factory.mktemp("pc") / "broken-features.pt"
    export_pair_potential(path, quadrupole=KAPPA, features=True)
    return ModelHandle.load(str(path))


@pytest.fixture(scope="module")
def cluster_structure():
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=2)
    return from_atoms(atoms, label="cluster")


def _wrap(handle, structure):
    """A generic callable: positions -> {energy, forces, features} via evaluation.evaluate."""

    def fn(positions, decorations):
        s = Structure(structure.numbers, positions.detach().numpy().astype(np.float64), structure.cell, structure.pbc)
        p = evaluate(handle, s, None, forces=True, stress=False, features=["mtt::features::planted"])
        return {
            "energy": torch.as_tensor(p.energy[0]),
            "forces": torch.as_tensor(p.forces[0]),
            "planted": torch.as_tensor(p.features["mtt::features::planted"][0]),
        }

    fn.needs_grad = True  # evaluate() takes autograd forces: do not wrap it in no_grad
    return fn


def _close(a, b, scale, rtol=1e-10):
    assert abs(a - b) <= rtol * max(abs(scale), 1e-300), (a, b)


def test_generic_core_matches_atomistic_path(featured_model, cluster_structure):
    s = cluster_structure
    fn = _wrap(featured_model, s)
    dec = s.numbers[:, None].astype(float)
    rules = {"energy": "scalar", "forces": "point_vector"}

    # equivariance errors: same operations as check_equivariance(n_rotations=8, seed=0)
    atomistic = check_equivariance(featured_model, s, n_rotations=8, seed=0, direct=False).structures[0]
    generic = equivariance_errors(fn, s.positions, dec, haar_rotations(8, 0), rules).outputs
    _close(generic["energy"].max, atomistic.energy_max, atomistic.energy_max)
    f = atomistic.forces
    assert f.relative > 1e-4  # the planted term is visible
    for key in ("rms", "max", "reference_rms", "relative"):
        _close(getattr(generic["forces"], key), getattr(f, key), getattr(f, key))
    np.testing.assert_allclose(generic["forces"].per_operation_rms, f.per_operation_rms, rtol=1e-10)

    # spectra on the same quadrature
    lmax = 2
    spectrum, _ = structure_spectrum(featured_model, s, lmax=lmax, direct=False)
    ours = output_spectra(fn, s.positions, dec, lmax, rules)
    for name in ("energy", "forces"):
        ref = spectrum.outputs[name]
        got = ours[name]
        _close(got.mean_square, ref.mean_square, ref.mean_square)
        _close(got.variance, ref.variance, ref.mean_square)
        for channel, power in ref.power.items():
            _close(got.power[channel], power, ref.mean_square)
    # the planted lambda = 2 term lands in (2, +)
    assert ours["energy"].power[(2, 1)] > 0.99 * ours["energy"].variance

    # layer content: same numbers as representations.representation_content
    ref_layers = representation_content(featured_model, [s], lmax=lmax).layers[0]

    def features(positions, decorations):
        return {"planted": fn(positions, decorations)["planted"]}

    features.needs_grad = True

    got_layers = layer_content(features, [(s.positions, dec)], lmax).layers[0]
    _close(got_layers.mean_square, ref_layers.mean_square, ref_layers.mean_square)
    for channel, power in ref_layers.power.items():
        _close(got_layers.power[channel], power, ref_layers.mean_square)


# ----------------------------------------------------------------------------------------
# Analytic callables
# ----------------------------------------------------------------------------------------

AXIS = np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])


def _cloud(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * 2.0, rng.uniform(0.5, 2.0, size=(n, 1))


def equivariant(positions, decorations):
    e = decorations[:, 0]
    centred = positions - positions.mean(0)
    r2 = (centred**2).sum(1)
    return {
        "energy": (e * r2).sum(),
        "energies": torch.stack([e * r2, torch.cos(r2)], dim=1),
        "dipole": (e[:, None] * positions).sum(0),
        "forces": -2.0 * e[:, None] * centred,
        "moment": (e[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0),
    }


RULES = {"energy": "scalar", "energies": "point_scalar", "dipole": "vector", "forces": "point_vector", "moment": "tensor2"}


def test_exact_invariants_give_round_off():
    pos, dec = _cloud()
    errors = equivariance_errors(equivariant, pos, dec, rules=RULES, n_rotations=10, seed=3)
    assert "forces" in errors_table([errors])
    for name, e in errors.outputs.items():
        assert e.relative < 1e-13, (name, e.relative)
    assert errors.outputs["energies"].label_flip == 0.0
    spectra = output_spectra(equivariant, pos, dec, 2, RULES)
    for name, s in spectra.items():
        assert s.variance <= 1e-26 * s.mean_square, name
        assert s.power[(0, 1)] == pytest.approx(s.mean_square, rel=1e-12)


def test_back_rotation_and_center():
    pos, dec = _cloud()
    R = haar_rotations(3, 1)
    raw = evaluate_rotated(equivariant, pos, dec, R, RULES, back_rotate=False)
    back = evaluate_rotated(equivariant, pos, dec, R, RULES)
    ref = equivariant(torch.as_tensor(pos), torch.as_tensor(dec))
    np.testing.assert_allclose(raw["dipole"], np.asarray(ref["dipole"]) @ R.transpose(0, 2, 1), atol=1e-12)
    np.testing.assert_allclose(back["moment"], np.broadcast_to(ref["moment"].numpy(), (3, 3, 3)), atol=1e-12)
    # rotating about another centre only translates: the centred outputs do not change
    shifted = evaluate_rotated(equivariant, pos, dec, R, RULES, center=[5.0, -2.0, 1.0])
    np.testing.assert_allclose(shifted["forces"], back["forces"], atol=1e-12)
    with pytest.raises(ValueError):
        OutputRule("spinor")
    with pytest.raises(ModelEvaluationError, match="no output"):
        evaluate_rotated(equivariant, pos, dec, R, {"missing": "scalar"})


def planted(positions, decorations):
    """Pure lambda = 1 (polar, parity -) and lambda = 2 (parity +) functions of R."""
    d = (decorations * positions).sum(0)  # a polar vector: rotates with the cloud
    a = torch.as_tensor(AXIS, dtype=positions.dtype)
    proj = d @ a
    forces = -2.0 * decorations * (positions - positions.mean(0)) + 0.1 * a  # constant bias
    return {
        "l1": proj,
        "l2": proj**2 - (d @ d) / 3.0,
        "point_l2": (positions @ a) ** 2 - (positions**2).sum(1) / 3.0,
        "forces": forces,
    }


def test_planted_channels():
    pos, dec = _cloud(seed=4)
    rules = {"l1": "scalar", "l2": "scalar", "point_l2": "point_scalar", "forces": "point_vector"}
    spectra = output_spectra(planted, pos, dec, 3, rules)
    expected = {"l1": (1, -1), "l2": (2, 1), "point_l2": (2, 1), "forces": (1, -1)}
    for name, channel in expected.items():
        s = spectra[name]
        assert s.variance > 1e-3
        assert s.power[channel] == pytest.approx(s.variance, rel=1e-10), name
        for other, power in s.power.items():
            if other not in (channel, (0, 1)):
                assert power < 1e-12 * s.mean_square, (name, other)
        assert s.unresolved < 1e-12 * s.mean_square
    assert spectra["l1"].power[(0, 1)] < 1e-20  # zero mean over O(3)
    assert "l2" in spectra_table({"planted": spectra}, 3)
    # the forces' planted bias: the mean is the equivariant part, the variance is |0.1 a|^2 per point
    assert spectra["forces"].variance == pytest.approx(0.01, rel=1e-10)


def test_layer_content_of_analytic_features():
    pos, dec = _cloud(seed=5)

    def features(positions, decorations):
        centred = positions - positions.mean(0)
        r2 = (centred**2).sum(1, keepdim=True)
        return {"invariant": torch.cat([r2, decorations], 1), "mixed": torch.cat([r2, centred], 1)}

    quad = smallest_exact_quadrature(4)
    report = layer_content(features, [(pos, dec), _cloud(seed=6)], 2, quadrature=quad, model="analytic")
    inv, mixed = report.layers
    assert inv.invariant_fraction == pytest.approx(1.0, abs=1e-12)
    r2 = ((pos - pos.mean(0)) ** 2).sum(1)
    pos6 = _cloud(seed=6)[0]
    r2b = ((pos6 - pos6.mean(0)) ** 2).sum(1)
    expected_l1 = ((r2.sum() + r2b.sum()) / 2)
    assert mixed.power[(1, -1)] == pytest.approx(expected_l1, rel=1e-10)
    assert "mixed" in report.table()
    with pytest.raises(ValueError):
        layer_content(features, [(pos, dec)], 3, quadrature=quad)
