import warnings

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ase_symdiag.o3.quadrature import (
    O3Quadrature,
    exactness_degree,
    grid_quadrature,
    group_quadrature,
    haar_random,
    lebedev_quadrature,
    smallest_exact_quadrature,
    wigner_D,
)


def _quiet_import(module):
    # metatomic imports torch.jit.script, which emits DeprecationWarnings under -W error
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def _irrep_sums(quad, l):
    """Weighted sums of D^{l,+} (proper part) and D^{l,-} = det * D^{l,+}."""
    det = np.linalg.det(quad.rotations)
    D = wigner_D(l, quad.rotations) * (np.sign(det) ** l)[:, None, None]
    return (
        np.einsum("k,kab->ab", quad.weights, D),
        np.einsum("k,kab->ab", quad.weights * np.sign(det), D),
    )


EXACT_CASES = (
    [("O", lambda: group_quadrature("O"), 3), ("I", lambda: group_quadrature("I"), 5)]
    + [
        (f"lebedev{L}", (lambda L=L: lebedev_quadrature(L)), d)
        for L, d in zip(range(1, 6), (2, 3, 3, 5, 5))
    ]
    + [
        (f"grid{L}", (lambda L=L: grid_quadrature(L)), L)
        for L in range(1, 6)
    ]
)
ALL_QUADS = [c[:2] for c in EXACT_CASES] + [
    ("O_proper", lambda: group_quadrature("O", include_inversion=False)),
    ("I_proper", lambda: group_quadrature("I", include_inversion=False)),
    ("lebedev3_proper", lambda: lebedev_quadrature(3, include_inversion=False)),
    ("haar", lambda: haar_random(17, seed=3)),
]


@pytest.mark.parametrize("name,make", ALL_QUADS, ids=[c[0] for c in ALL_QUADS])
def test_weights_and_orthogonality(name, make):
    q = make()
    assert isinstance(q, O3Quadrature)
    assert q.rotations.dtype == np.float64 and q.weights.dtype == np.float64
    assert q.rotations.shape == (q.size, 3, 3) and q.weights.shape == (q.size,)
    np.testing.assert_allclose(q.weights.sum(), 1.0, atol=1e-14)
    RtR = np.einsum("kji,kjl->kil", q.rotations, q.rotations)
    np.testing.assert_allclose(RtR, np.broadcast_to(np.eye(3), RtR.shape), atol=1e-12)
    det = np.linalg.det(q.rotations)
    np.testing.assert_allclose(np.abs(det), 1.0, atol=1e-12)
    assert q.include_inversion == bool(np.any(det < 0))
    with pytest.raises(ValueError):
        q.rotations[0, 0, 0] = 2.0  # read-only


@pytest.mark.parametrize(
    "name,make,degree", EXACT_CASES, ids=[c[0] for c in EXACT_CASES]
)
def test_exactness_is_tight(name, make, degree):
    q = make()
    assert q.degree == degree
    assert exactness_degree(q) == degree
    plus0, minus0 = _irrep_sums(q, 0)
    np.testing.assert_allclose(plus0, [[1.0]], atol=1e-14)
    np.testing.assert_allclose(minus0, [[0.0]], atol=1e-14)
    for l in range(1, degree + 1):
        plus, minus = _irrep_sums(q, l)
        assert np.abs(plus).max() < 1e-12, l
        assert np.abs(minus).max() < 1e-12, l
    plus, minus = _irrep_sums(q, degree + 1)
    assert max(np.abs(plus).max(), np.abs(minus).max()) > 1e-3


def test_group_sizes():
    assert group_quadrature("O").size == 48
    assert group_quadrature("I").size == 120
    assert group_quadrature("O", include_inversion=False).size == 24
    assert group_quadrature("I", include_inversion=False).size == 60
    assert group_quadrature("O", include_inversion=False).degree == 3
    assert group_quadrature("I", include_inversion=False).degree == 5
    assert group_quadrature("D2").size == 8 and group_quadrature("D2").degree == 1
    assert group_quadrature("T").size == 24 and group_quadrature("T").degree == 2
    with pytest.raises(ValueError):
        group_quadrature("Td")


def test_groups_are_closed():
    for name in ("D2", "T", "O", "I"):
        R = group_quadrature(name).rotations
        prods = np.einsum("aij,bjk->abik", R, R).reshape(-1, 9)
        dist = np.abs(prods[:, None, :] - R.reshape(1, -1, 9)).max(-1).min(-1)
        assert dist.max() < 1e-12


def _assert_same_set(R1, w1, R2, w2):
    assert R1.shape == R2.shape and w1.shape == w2.shape
    dist = np.abs(R1.reshape(-1, 1, 9) - R2.reshape(1, -1, 9)).max(-1)
    match = dist.argmin(1)
    assert dist[np.arange(len(R1)), match].max() < 1e-12
    assert len(set(match.tolist())) == len(R1)  # bijection
    np.testing.assert_allclose(w1, w2[match], atol=1e-15)


@pytest.mark.parametrize("inversion", [True, False])
@pytest.mark.parametrize("l_max", [1, 2, 3, 4, 5])
def test_lebedev_matches_metatomic_ase(l_max, inversion):
    sym = _quiet_import("metatomic_ase._symmetry")
    # build the calculator itself: __init__ only stores the base calculator
    calc = sym.SymmetrizedCalculator(None, l_max=l_max, include_inversion=inversion)
    q = lebedev_quadrature(l_max, include_inversion=inversion)
    _assert_same_set(
        q.rotations, q.weights, calc.quadrature_rotations, calc.quadrature_weights
    )


def test_lebedev_sizes():
    assert [lebedev_quadrature(L).size for L in (1, 2, 3, 5)] == [36, 60, 84, 308]


@pytest.mark.parametrize("inversion", [True, False])
@pytest.mark.parametrize("degree", [1, 2, 3, 4, 5, 6])
def test_grid_matches_metatomic_torch(degree, inversion):
    mq = _quiet_import("metatomic.torch.o3._quadrature")
    order, K = mq.choose_quadrature(degree)
    R, w = mq.get_rotation_quadrature(order, K, include_inversion=inversion)
    q = grid_quadrature(degree, include_inversion=inversion)
    _assert_same_set(q.rotations, q.weights, R, w)


def test_grid_sizes():
    assert grid_quadrature(3).size == 48
    assert grid_quadrature(5).size == 168


def test_haar_random():
    a, b = haar_random(40, seed=7), haar_random(40, seed=7)
    np.testing.assert_array_equal(a.rotations, b.rotations)
    assert not np.allclose(a.rotations, haar_random(40, seed=8).rotations)
    det = np.linalg.det(a.rotations)
    assert abs(det.mean()) < 1e-12
    np.testing.assert_allclose(det[1::2], -1.0, atol=1e-12)
    assert a.degree == -1 and a.include_inversion
    np.testing.assert_allclose(a.weights, 1 / 40)
    p = haar_random(40, seed=7, include_inversion=False)
    np.testing.assert_allclose(np.linalg.det(p.rotations), 1.0, atol=1e-12)
    assert not p.include_inversion
    np.testing.assert_allclose(p.rotations[::2], a.rotations[::2])


def test_wigner_D_properties():
    rng = np.random.default_rng(0)
    R1 = Rotation.random(8, rng=rng).as_matrix()
    R2 = Rotation.random(8, rng=rng).as_matrix()
    R1[::2] *= -1
    theta = np.linalg.norm(
        Rotation.from_matrix(R1 * np.linalg.det(R1)[:, None, None]).as_rotvec(), axis=1
    )
    det = np.linalg.det(R1)
    for l in range(0, 9):
        D1, D2 = wigner_D(l, R1), wigner_D(l, R2)
        assert D1.shape == (8, 2 * l + 1, 2 * l + 1)
        # homomorphism and orthogonality
        np.testing.assert_allclose(wigner_D(l, R1 @ R2), D1 @ D2, atol=1e-12)
        np.testing.assert_allclose(
            D1 @ D1.transpose(0, 2, 1),
            np.broadcast_to(np.eye(2 * l + 1), D1.shape),
            atol=1e-12,
        )
        # character: det^l * sin((2l+1) theta/2) / sin(theta/2)
        chi = np.sin((2 * l + 1) * theta / 2) / np.sin(theta / 2) * det**l
        np.testing.assert_allclose(np.trace(D1, axis1=1, axis2=2), chi, atol=1e-11)
    # l=1 in the (y, z, x) real-harmonic order is R itself, permuted
    P = np.eye(3)[[1, 2, 0]]
    np.testing.assert_allclose(wigner_D(1, R1), P @ R1 @ P.T, atol=1e-12)
    # group elements sitting on the poles (gimbal lock) are handled exactly
    Q = group_quadrature("O", include_inversion=False)
    mean = np.einsum("k,kab->ab", Q.weights, wigner_D(3, Q.rotations))
    assert np.abs(mean).max() < 1e-13


def test_exactness_degree_random_and_pseudoscalar():
    assert exactness_degree(haar_random(10, seed=0)) == 0
    # improper set whose weights do not cancel the pseudoscalar (0,-)
    q = group_quadrature("O")
    w = q.weights.copy()
    w[: q.size // 2] *= 1.5
    w[q.size // 2 :] *= 0.5
    bad = O3Quadrature(q.rotations, w, -1, "bad", True)
    assert exactness_degree(bad) == -1
    assert exactness_degree(group_quadrature("I"), lmax=4) == 4


def test_validation():
    with pytest.raises(ValueError):
        O3Quadrature(np.zeros((2, 3, 3)), np.ones(3) / 3, -1, "x", False)
    with pytest.raises(ValueError):
        O3Quadrature(np.zeros((2, 3)), np.ones(2) / 2, -1, "x", False)


def test_smallest_exact_quadrature():
    q3 = smallest_exact_quadrature(3)
    q5 = smallest_exact_quadrature(5)
    assert q3.size == 48 and q3.degree >= 3
    assert q5.size == 120 and q5.degree >= 5
    assert smallest_exact_quadrature(3) is q3  # cached
    assert smallest_exact_quadrature(3, include_inversion=False).size == 24
    assert smallest_exact_quadrature(5, include_inversion=False).size == 60
    for d in range(0, 7):
        q = smallest_exact_quadrature(d)
        assert q.degree >= d and exactness_degree(q) >= d


@pytest.mark.parametrize("text, spec, size", [("3", 3, 48), ("O", "O", 48), ("lebedev:3", "lebedev:3", 84),
                                              ("I:proper", "I:proper", 60)])
def test_parse_quadrature(text, spec, size):
    from ase_symdiag.o3.quadrature import parse_quadrature, resolve_quadrature

    assert parse_quadrature(text) == spec
    assert resolve_quadrature(spec).size == size


@pytest.mark.parametrize("text", ["bogus", "T+", "lebedev:x", "grid:3:improper", ""])
def test_parse_quadrature_refuses(text):
    from ase_symdiag.errors import UsageError
    from ase_symdiag.o3.quadrature import parse_quadrature

    with pytest.raises(UsageError):
        parse_quadrature(text)
