"""ase_symdiag.testing (assertions) and ase_symdiag.pytest_plugin (fixtures)."""

import itertools

import numpy as np
import pytest
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from ase_symdiag import SymDiagCalculator
from ase_symdiag.reference.analytic import export_pair_potential
from ase_symdiag.testing import (
    TOLERANCES,
    assert_equivariant,
    assert_symmetrized_equivariant,
    invariant_counts,
    noise_floor,
)

pytest_plugins = ["pytester"]

HEADER_WORDS = ("structure", "atoms", "|dE|/N", "dF rms", "status", "tolerance")


@pytest.fixture
def structures():
    """The plugin's structures (built the same way, without loading the plugin)."""
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.01, seed=1)
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    crystal.rattle(0.05, seed=2)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    slab.rattle(0.05, seed=3)
    out = {"molecule": ethanol, "crystal": crystal, "slab": slab}
    for name, atoms in out.items():
        atoms.info["name"] = name
    return out


class FieldEMT(Calculator):
    """EMT plus ``k sum_i ((x_i - c) . a)^2`` (c the centroid): translation invariant,
    not rotation invariant (a fixed axis a); with ``quartic`` instead
    ``k sum_i sum_alpha (x_i - c)_alpha^4``, invariant only under the cubic group."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, k=0.01, axis=(0.0, 0.0, 1.0), quartic=False, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        self.axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
        self.quartic = quartic
        self.emt = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        image = self.atoms.copy()
        image.calc = self.emt
        energy = image.get_potential_energy()
        forces = image.get_forces().copy()
        r = self.atoms.positions - self.atoms.positions.mean(axis=0)
        if self.quartic:
            energy += self.k * np.sum(r**4)
            grad = 4.0 * self.k * r**3
        else:
            proj = r @ self.axis
            energy += self.k * np.sum(proj**2)
            grad = 2.0 * self.k * proj[:, None] * self.axis[None, :]
        forces -= grad - grad.mean(axis=0)  # d/dx_i through the centroid too
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = forces
        if all(self.atoms.pbc):
            self.results["stress"] = image.get_stress()


class GroupAveraged(Calculator):
    """Average of ``calc`` over a finite group: E = <E(gx)>, F = <F(gx) g>, S = <g^T S(gx) g>."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, calc, group, **kwargs):
        super().__init__(**kwargs)
        self.calc = calc
        self.group = np.asarray(group)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces, stress = 0.0, 0.0, 0.0
        periodic = all(self.atoms.pbc)
        for g in self.group:
            image = self.atoms.copy()
            image.set_cell(self.atoms.cell.array @ g.T, scale_atoms=False)
            image.positions = self.atoms.positions @ g.T
            image.calc = self.calc
            energy += image.get_potential_energy()
            forces = forces + image.get_forces() @ g
            if periodic:
                stress = stress + g.T @ image.get_stress(voigt=False) @ g
        n = len(self.group)
        self.results["energy"] = self.results["free_energy"] = energy / n
        self.results["forces"] = forces / n
        if periodic:
            s = stress / n
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def cubic_group():
    """O_h: the 48 signed permutation matrices."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            out.append(m)
    return np.array(out)


def tetrahedral_group():
    """T_h (24 operations): the even (cyclic) permutations of O_h; integrates l <= 2 exactly."""
    return np.array([g for g in cubic_group() if np.trace(np.abs(g)) in (0.0, 3.0)])


# ----------------------------------------------------------------------------- tolerances


def test_derived_tolerances():
    u32, u64 = 2.0**-24, 2.0**-53
    assert TOLERANCES["float32"]["energy"] == pytest.approx(3000 * u32)
    assert TOLERANCES["float32"]["force"] == pytest.approx(3000 * u32)
    assert TOLERANCES["float32"]["stress"] == pytest.approx(900 * u32)
    assert TOLERANCES["float64"]["force"] == pytest.approx(3000 * u64)
    assert noise_floor("float32", {"safety": 20.0})["force"] == pytest.approx(6000 * u32)


# ----------------------------------------------------------------------------- (a), (b)


def test_emt_passes(structures):
    report = assert_equivariant(EMT(), list(structures.values()))
    assert report.dtype == "float64" and report.n_operations == 8
    assert [r.label for r in report.structures] == ["0:molecule", "1:crystal", "2:slab"]
    assert report.structures[1].stress is not None and report.structures[2].stress is None
    assert "worst" in report.table()


def test_broken_calculator_fails_with_table(structures):
    with pytest.raises(AssertionError) as info:
        assert_equivariant(FieldEMT(k=0.05), structures)
    message = str(info.value)
    for word in HEADER_WORDS:
        assert word in message
    # the crystal has the largest force error (its atoms sit furthest from the centroid)
    assert "worst structure: crystal" in message
    assert "worst atom: index" in message and "det" in message and "R = [[" in message
    assert "FAIL" in message


def test_relative_and_explicit_tolerances(structures):
    atoms = structures["crystal"]
    # generous tolerances let the broken calculator pass; relative mode too
    assert_equivariant(FieldEMT(k=0.05), atoms, energy_tol=1.0, force_tol=10.0, stress_tol=1.0)
    assert_equivariant(FieldEMT(k=0.05), atoms, energy_tol=1.0, force_tol=100.0, relative=True)
    with pytest.raises(AssertionError, match="FAIL: forces"):
        assert_equivariant(FieldEMT(k=0.05), atoms, energy_tol=1.0, force_tol=1e-6, relative=True)


def test_user_rotations_are_checked(structures):
    # the field along z is invariant under rotations about z and under the inversion
    angle = 0.7
    about_z = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    report = assert_equivariant(
        FieldEMT(k=0.05), structures["molecule"], rotations=[about_z, -np.eye(3)], n_rotations=0
    )
    assert report.n_operations == 2


# ----------------------------------------------------------------------------- (c), (e)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_metatomic_model_path(tmp_path, structures, dtype):
    good = tmp_path / "eq.pt"
    export_pair_potential(good, dtype=dtype)
    report = assert_equivariant(str(good), structures)
    assert report.dtype == dtype

    bad = tmp_path / "broken.pt"
    export_pair_potential(bad, dtype=dtype, quadrupole=0.01)
    with pytest.raises(AssertionError) as info:
        assert_equivariant(str(bad), structures)
    message = str(info.value)
    assert dtype in message and "worst atom: index" in message
    for word in HEADER_WORDS:
        assert word in message


def test_symdiag_calculator_and_direct_heads(tmp_path, structures):
    path = tmp_path / "direct.pt"
    export_pair_potential(path, direct=True, direct_bias=(0.05, -0.02, 0.03))
    calculator = SymDiagCalculator(str(path))
    # conservative outputs are exact; the direct forces carry a planted lambda = 1 term
    assert_equivariant(calculator, structures, direct=False)
    with pytest.raises(AssertionError, match="worst: direct forces"):
        assert_equivariant(calculator, structures)


# ----------------------------------------------------------------------------- symmetrized


def test_group_exactness_counts():
    counts = invariant_counts(cubic_group(), 4)
    assert all(abs(counts[(l, p)]) < 1e-12 for l in (1, 2, 3) for p in (1, -1))
    assert counts[(4, 1)] == pytest.approx(1.0)  # the cubic harmonic
    counts = invariant_counts(tetrahedral_group(), 3)
    assert len(tetrahedral_group()) == 24
    assert all(abs(counts[(l, p)]) < 1e-12 for l in (1, 2) for p in (1, -1))
    assert counts[(3, 1)] == pytest.approx(1.0)  # xyz times the inversion parity: (3, +)
    assert counts[(3, -1)] == pytest.approx(0.0)


def test_symmetrized_assertions(structures):
    group = tetrahedral_group()
    atoms = structures["molecule"]
    # EMT is exactly equivariant: passes under the group and under random operations
    result = assert_symmetrized_equivariant(EMT(), atoms, rotations=group, degree=2, random_tolerances={})
    assert result.group.n_operations == 24 and result.random.n_operations == 8
    # not symmetrized: the field breaks T_h
    with pytest.raises(AssertionError, match="worst structure"):
        assert_symmetrized_equivariant(FieldEMT(k=0.05), atoms, rotations=group)
    # averaged over T_h: the l = 2 field becomes exactly invariant (T_h integrates l <= 2)
    averaged = GroupAveraged(FieldEMT(k=0.05), group)
    floor = {"energy": 1e-12, "force": 1e-12}
    assert_symmetrized_equivariant(averaged, atoms, rotations=group, degree=2, n_rotations=4, random_tolerances=floor)
    # a quartic (l = 4 cubic harmonic) field survives the average: exact under T_h only
    quartic = GroupAveraged(FieldEMT(k=0.05, quartic=True), group)
    result = assert_symmetrized_equivariant(quartic, atoms, rotations=group, degree=2, n_rotations=4)
    assert result.random.summary()["force_rms_per_component_eV_per_A"] > 1e-3
    with pytest.raises(AssertionError, match="worst structure"):
        assert_symmetrized_equivariant(quartic, atoms, rotations=group, n_rotations=4, random_tolerances=floor)
    with pytest.raises(AssertionError, match="not exact to degree 3"):
        assert_symmetrized_equivariant(quartic, atoms, rotations=group, degree=3)
    with pytest.raises(ValueError, match="do not form a group"):
        assert_symmetrized_equivariant(EMT(), atoms, rotations=group[:10])


def test_symmetrized_symdiag_calculator_is_tested_as_it_returns(ethanol_l2):
    """A SymDiagCalculator with symmetrize= was tested as its raw model (which fails)."""
    from repo import ROOT

    model = str(ROOT / "models" / "morse-broken-l2.pt")
    group = cubic_group()
    result = assert_symmetrized_equivariant(
        SymDiagCalculator(model, symmetrize="O"), ethanol_l2, rotations=group, degree=3, n_rotations=0
    )
    assert result.group.model == f"{model} [symmetrize=Oh]" and result.group.dtype == "float64"
    assert result.group.n_operations == 48
    # the raw model breaks O_h (a plain calculator is still checked batched, as its model)
    with pytest.raises(AssertionError, match="worst structure"):
        assert_symmetrized_equivariant(SymDiagCalculator(model), ethanol_l2, rotations=group, n_rotations=0)
    # a corrected calculator: its corrected forces are measured, not the model's
    raw = assert_equivariant(SymDiagCalculator(model), ethanol_l2, n_rotations=2, force_tol=np.inf, energy_tol=np.inf)
    corrected = assert_equivariant(
        SymDiagCalculator(model, corrections=["net_torque"]), ethanol_l2, n_rotations=2, force_tol=np.inf, energy_tol=np.inf
    )
    assert raw.structures[0].forces.rms_per_component != corrected.structures[0].forces.rms_per_component


@pytest.fixture
def ethanol_l2():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.01, seed=4)
    return atoms


# ----------------------------------------------------------------------------- (d) plugin


def test_plugin_fixtures(pytester):
    pytester.makepyfile(
        test_user="""
        from ase.calculators.emt import EMT
        from ase_symdiag.testing import assert_equivariant

        def test_emt(symdiag_structures, haar_rotations, symdiag_tolerances):
            tol = symdiag_tolerances["float64"]
            assert sorted(symdiag_structures) == ["crystal", "molecule", "slab"]
            assert list(symdiag_structures["slab"].pbc) == [True, True, False]
            assert haar_rotations(4).shape == (4, 3, 3) and haar_rotations.seed == 3
            assert_equivariant(EMT(), symdiag_structures, rotations=haar_rotations(2),
                               energy_tol=tol["energy"], force_tol=tol["force"], stress_tol=tol["stress"])
        """
    )
    result = pytester.runpytest("-p", "ase_symdiag.pytest_plugin", "--symdiag-seed", "3", "-q")
    result.assert_outcomes(passed=1)


def test_assert_equivariant_takes_a_torchsim_model(crystal):
    """A TorchSim model is checked batched (not loaded as a metatomic model): the
    equivariant one passes at float64's noise floor, the planted one fails naming its
    worst atom, and averaging over degree 2 makes it pass."""
    pytest.importorskip("torch_sim")
    from torchsim_planted import PlantedModel, lennard_jones

    from ase_symdiag.md.torchsim_models import SymmetrizedModel

    report = assert_equivariant(lennard_jones(), crystal, n_rotations=4)
    assert report.model == "LennardJonesModel"
    planted = PlantedModel(lennard_jones(), a=0.02, b=0.01)
    with pytest.raises(AssertionError, match=r"(?s)assertion failed for PlantedModel.*FAIL: energy, forces, stress.*worst atom: index"):
        assert_equivariant(planted, crystal, n_rotations=4)
    assert_equivariant(SymmetrizedModel(planted, 2), crystal, n_rotations=4)
