"""pytest fixtures for equivariance tests of interatomic potentials.

Opt in with ``pytest -p ase_symdiag.pytest_plugin`` (or, in a ``conftest.py``,
``pytest_plugins = ["ase_symdiag.pytest_plugin"]``). Then::

    from ase_symdiag.testing import assert_equivariant

    def test_equivariant(symdiag_structures):
        assert_equivariant(MyCalculator(), symdiag_structures)

Fixtures: :func:`haar_rotations` (seeded O(3) sampler; ``--symdiag-seed``),
:func:`symdiag_structures` (molecule, crystal, slab) and :func:`symdiag_tolerances`
(the derived float32/float64 noise floors of :mod:`ase_symdiag.testing`).
"""

from __future__ import annotations

import copy

import pytest

from ase_symdiag.o3 import operations as _operations
from ase_symdiag import testing as _testing


def pytest_addoption(parser):
    group = parser.getgroup("ase-symdiag", "equivariance tests (ase-symdiag)")
    group.addoption(
        "--symdiag-seed",
        action="store",
        type=int,
        default=0,
        help="seed of the Haar-random O(3) operations of the haar_rotations fixture (default 0)",
    )


@pytest.fixture
def haar_rotations(request):
    """A seeded sampler ``n -> (n, 3, 3)`` of Haar-uniform O(3) operations.

    Every second operation is improper (``include_inversion=False`` for rotations only). The
    seed is ``--symdiag-seed`` (default 0): the same seed gives the same operations.
    """
    seed = request.config.getoption("--symdiag-seed")

    def sample(n: int, *, include_inversion: bool = True):
        return _operations.haar_rotations(n, seed, include_inversion=include_inversion)

    sample.seed = seed
    return sample


@pytest.fixture
def symdiag_structures():
    """Small structures, ``{name: ase.Atoms}`` (fresh copies for each test).

    - ``"molecule"``: ethanol (``ase.build.molecule("CH3CH2OH")``), rattled 0.01 Å, no cell;
    - ``"crystal"``: Cu fcc (a = 3.61 Å) cubic cell repeated 2x2x2 (32 atoms), periodic,
      rattled 0.05 Å;
    - ``"slab"``: Cu(111) 2x2x3 slab with 6 Å vacuum, ``pbc=[True, True, False]``,
      rattled 0.05 Å.

    Elements H, C, O and Cu (all in ASE's EMT). ``atoms.info["name"]`` is the key.
    """
    from ase.build import bulk, fcc111, molecule

    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.01, seed=1)
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    crystal.rattle(0.05, seed=2)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    slab.pbc = [True, True, False]
    slab.rattle(0.05, seed=3)
    structures = {"molecule": ethanol, "crystal": crystal, "slab": slab}
    for name, atoms in structures.items():
        atoms.info["name"] = name
    return structures


@pytest.fixture
def symdiag_tolerances():
    """Equivariance tolerances per dtype: ``{"float64": {...}, "float32": {...}}``.

    Each holds ``"energy"`` (eV/atom, on max |dE|/N), ``"force"`` (eV/Å, on the
    largest over operations of the RMS force error per component, over atoms and
    x, y, z), ``"relative_force"`` (that over max(RMS force component, 1 meV/Å)) and
    ``"stress"`` (eV/Å^3, Frobenius). They are the rounding noise floor of an exactly
    equivariant model, :func:`ase_symdiag.testing.noise_floor`: with the unit
    roundoff u (2^-24 ~ 6.0e-8 in float32, 2^-53 ~ 1.1e-16 in float64), rounding
    errors of n = 100 accumulated terms of size t adding like a random walk
    (u t sqrt(n)), plus the rounding u L of rotated coordinates up to L = 20 Å
    propagated through a force (10 eV/Å) or force constant (10 eV/Å^2), times a safety
    factor 10 (two evaluations compared, maximum over operations and atoms):

    - energy: 10 u (10 eV * 10 + 10 eV/Å * 20 Å) = 3000 u eV/atom
      -> float32 1.8e-4, float64 3.3e-13;
    - force:  10 u (10 eV/Å * 10 + 10 eV/Å^2 * 20 Å) = 3000 u eV/Å
      -> float32 1.8e-4, float64 3.3e-13;
    - stress: 10 u 3 Å (10 eV/Å * 10 + 10 eV/Å^2 * 20 Å) / 10 Å^3 = 900 u eV/Å^3
      -> float32 5.4e-5 (8.6 MPa), float64 1.0e-13.

    These assume forces of at most ~10 eV/Å; for stiffer systems or deeper sums, use
    ``noise_floor(dtype, assumptions={...})`` or pass explicit tolerances.
    """
    return copy.deepcopy(_testing.TOLERANCES)
