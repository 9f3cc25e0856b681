"""o3/operations.py and o3/torch_operations.py: the Haar sampler (QR of a Gaussian with a sign fix)."""

import numpy as np
import pytest
import torch

from ase_symdiag.corrections import StochasticRotation
from ase_symdiag.o3 import torch_operations
from ase_symdiag.o3.operations import haar_from_gaussian, random_operation


def _sample(seed: int, n: int, improper: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([random_operation(rng, improper) for _ in range(n)])


def _assert_haar(rotations: np.ndarray, improper: bool) -> None:
    """Orthogonal, and the Haar moments of O(3) (``improper``) or SO(3)."""
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-12)
    det = np.linalg.det(rotations)
    np.testing.assert_allclose(np.abs(det), 1.0, atol=1e-12)
    # Haar moments: <R> = 0 (no l = 1 component), <R_ij^2> = 1/3, <(tr R)^2> = 1
    assert np.abs(rotations.mean(axis=0)).max() < 0.05
    np.testing.assert_allclose((rotations**2).mean(axis=0), np.full((3, 3), 1 / 3), atol=0.03)
    assert abs((np.trace(rotations, axis1=1, axis2=2) ** 2).mean() - 1.0) < 0.1
    if improper:
        assert abs(np.mean(det < 0) - 0.5) < 0.04
    else:
        assert np.all(det > 0)


@pytest.mark.parametrize("improper", [True, False])
def test_random_operation_is_haar(improper):
    rotations = _sample(0, 4000, improper)
    assert rotations.shape == (4000, 3, 3) and rotations.dtype == np.float64
    _assert_haar(rotations, improper)


@pytest.mark.parametrize("improper", [True, False])
def test_torch_sampler_is_haar_and_the_same_definition(improper):
    """The torch sampler (MD stochastic rotations) has the Haar moments, and gives the
    numpy definition's matrices from the same Gaussian draws."""
    generator = torch.Generator().manual_seed(0)
    rotations = torch_operations.haar_rotations(4000, generator, improper)
    assert rotations.shape == (4000, 3, 3) and rotations.dtype == torch.float64
    _assert_haar(rotations.numpy(), improper)
    gaussian = np.random.default_rng(1).standard_normal((500, 3, 3))
    np.testing.assert_allclose(
        torch_operations.haar_from_gaussian(torch.tensor(gaussian), improper).numpy(),
        haar_from_gaussian(gaussian, improper), atol=1e-12,
    )
    generator.manual_seed(5)
    drawn = torch.randn(7, 3, 3, generator=generator, dtype=torch.float64)
    generator.manual_seed(5)
    np.testing.assert_allclose(torch_operations.haar_rotations(7, generator, improper).numpy(),
                               haar_from_gaussian(drawn.numpy(), improper), atol=1e-12)


def test_random_operation_is_reproducible_and_drives_stochastic_rotation():
    np.testing.assert_array_equal(_sample(7, 5, True), _sample(7, 5, True))
    assert not np.allclose(_sample(7, 5, True), _sample(8, 5, True))
    # StochasticRotation draws from the same stream: seeded results are unchanged
    for improper in (True, False):
        sampler = StochasticRotation(seed=7, include_inversion=improper)
        drawn = np.concatenate([sampler.rotations(None)[0] for _ in range(5)])
        np.testing.assert_array_equal(drawn, _sample(7, 5, improper))


def test_random_operation_matches_qr_with_sign_fix():
    # the documented construction (Mezzadri 2007), 9 normals per call
    rng = np.random.default_rng(3)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    expected = q * np.sign(np.diag(r))[None, :]
    np.testing.assert_array_equal(random_operation(np.random.default_rng(3), True), expected)
