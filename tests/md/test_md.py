"""MD stability runs (ase_symdiag.md): analytic drift, failure detection, resume, CLI."""

from repo import ROOT as REPO_ROOT
import argparse
import json
import math
import os

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron

from ase_symdiag.cli.md import add_parser as add_md_parser
from ase_symdiag.md import MDError, run_md

ROOT = str(REPO_ROOT)
MODEL = os.path.join(ROOT, "models", "morse-broken-l2.pt")


class PairSprings(Calculator):
    """U = sign * k/2 sum_{i<j} |r_i - r_j|^2 (no cutoff), plus an optional constant
    force ``pump`` on every atom that is NOT in the energy (non-conservative)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, k=1.0, sign=1.0, pump=(0.0, 0.0, 0.0), nan_after=None, jump_below=None):
        super().__init__()
        self.k, self.sign, self.pump = k, sign, np.asarray(pump, dtype=float)
        self.nan_after, self.jump_below, self.calls = nan_after, jump_below, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = self.atoms.positions
        n = len(x)
        rel = n * x - x.sum(axis=0)  # sum_j (x_i - x_j)
        energy = self.sign * 0.5 * self.k * 0.5 * np.sum((x[:, None] - x[None]) ** 2)
        forces = -self.sign * self.k * rel + self.pump
        self.calls += 1
        if self.nan_after is not None and self.calls > self.nan_after:
            forces = forces * np.nan
        if self.jump_below is not None and np.linalg.norm(x[0] - x[1]) < self.jump_below:
            energy += 10.0
        self.results = {"energy": energy, "forces": forces}


def _load(path):
    with open(path) as handle:
        return json.load(handle)


def lj_cluster():
    atoms = Icosahedron("Ar", 2)  # 13 atoms, LJ-like geometry
    atoms.center(vacuum=5.0)
    return atoms


def test_lj_nve_conserves_energy(tmp_path):
    """Smooth LJ (argon), 13-atom cluster, 1 fs, 2 ps: no drift, no failure."""
    calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=8.5, smooth=True)
    result = run_md({"lj": calc}, lj_cluster(), steps=2000, timestep=1.0, temperature=30.0,
                    interval=10, out=str(tmp_path), distance_cutoff=4.5)
    s = result.variants["lj"].summary
    assert s["failure_reason"] is None
    assert s["steps_done"] == 2000 and s["records"] == 201
    # measured -5e-7 meV/atom/ps (fluctuation 2e-6 meV/atom, 1 fs step)
    assert abs(s["drift_meV_per_atom_per_ps"]) < 1e-4
    assert s["angular_momentum_drift"] < 1e-8  # pair forces are central
    assert os.path.exists(tmp_path / "md.png") and os.path.exists(tmp_path / "lj.traj")
    assert _load(tmp_path / "lj.json")["steps_done"] == 2000


class Pumped(Calculator):
    """An inner calculator's energy and forces, plus a constant force ``f0`` on every
    atom that the energy does not include (a non-conservative pump)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, inner, f0):
        super().__init__()
        self.inner, self.f0 = inner, np.asarray(f0, dtype=float)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self.inner
        self.results = {"energy": work.get_potential_energy(), "forces": work.get_forces() + self.f0}


def test_pumped_drift_matches_analytic_rate():
    """LJ cluster + a constant force f0 on every atom that the energy misses: the
    internal motion is unchanged (translation-invariant forces, equal masses, and
    velocity Verlet updates every velocity by the same dt f0/m), and the centre of
    mass accelerates from rest, so E_tot(t) = E_LJ(t) + f0^2 t^2 / (2 m) per atom
    exactly; a least-squares line over [0, T] through a parabola has slope
    f0^2 T / (2 m) per atom."""
    f0 = np.array([0.004, -0.002, 0.001])  # eV/Å
    T_fs = 1000.0
    lj = lambda: LennardJones(sigma=3.4, epsilon=0.0104, rc=8.5, smooth=True)  # noqa: E731
    result = run_md({"pumped": Pumped(lj(), f0), "lj": lj()}, lj_cluster(), steps=1000, timestep=1.0,
                    temperature=30.0, interval=5, distance_cutoff=4.5)
    m = lj_cluster().get_masses()[0]
    rate = np.dot(f0, f0) * (T_fs * units.fs) / (2 * m)  # eV per ASE time unit, per atom
    expected = rate * (1000.0 * units.fs) * 1000.0  # meV/atom/ps
    pumped = result.variants["pumped"].summary
    reference = result.variants["lj"].summary
    assert pumped["failure_reason"] is None and reference["failure_reason"] is None
    assert expected == pytest.approx(2.536, abs=0.001)  # argon, 39.95 amu
    assert abs(reference["drift_meV_per_atom_per_ps"]) < 1e-3 * expected
    assert pumped["drift_meV_per_atom_per_ps"] == pytest.approx(expected, rel=1e-3)
    # exact once the (tiny) LJ integration error is taken out
    difference = pumped["drift_meV_per_atom_per_ps"] - reference["drift_meV_per_atom_per_ps"]
    assert difference == pytest.approx(expected, rel=1e-6)
    # net momentum grows as N f0 t (amu Å/fs)
    p = result.variants["pumped"].records["momentum"][-1]
    assert p == pytest.approx(13 * np.linalg.norm(f0) * T_fs * units.fs**2, rel=1e-6)


def two_atoms(d0=2.0):
    return Atoms("Cu2", positions=[[0, 0, 0], [d0, 0, 0]])


def test_collapse_detected_at_analytic_time():
    """Attractive springs with zero rest length: r(t) = d0 cos(w t), w = sqrt(2k/m);
    the pair passes 0.5 Å at t* = arccos(0.5/d0)/w."""
    k, d0, dt = 1.0, 2.0, 0.5
    m = two_atoms().get_masses()[0]
    w = math.sqrt(2 * k / m) * units.fs  # 1/fs
    t_star = math.acos(0.5 / d0) / w
    result = run_md({"springs": PairSprings(k=k)}, two_atoms(d0), steps=1000, timestep=dt, temperature=None)
    s = result.variants["springs"].summary
    assert "apart" in s["failure_reason"]
    assert s["failure_time_ps"] * 1000 == pytest.approx(t_star, abs=dt)
    assert s["steps_done"] < 1000


def test_exploding_force_detected_at_analytic_time():
    """Inverted springs: r(t) = d0 cosh(w t), |F| = k r exceeds F_max at arccosh(F_max/(k d0))/w."""
    k, d0, dt, fmax = 1.0, 2.0, 0.5, 50.0
    m = two_atoms().get_masses()[0]
    w = math.sqrt(2 * k / m) * units.fs
    t_star = math.acosh(fmax / (k * d0)) / w
    result = run_md({"inverted": PairSprings(k=k, sign=-1.0)}, two_atoms(d0), steps=2000, timestep=dt,
                    temperature=None, max_force=fmax)
    s = result.variants["inverted"].summary
    assert s["failure_reason"].startswith("force")
    assert s["failure_time_ps"] * 1000 == pytest.approx(t_star, abs=dt)


def test_non_finite_forces_and_energy_jump():
    result = run_md({"nan": PairSprings(nan_after=11)}, two_atoms(), steps=100, timestep=0.5, temperature=None)
    s = result.variants["nan"].summary
    assert s["failure_reason"] == "non-finite forces" and s["failure_step"] == 11  # call 12: the initial call + 11 steps
    # energy jump of 10 eV (5 eV/atom) once the pair is closer than 1.5 Å
    result = run_md({"jump": PairSprings(jump_below=1.5)}, two_atoms(), steps=1000, timestep=0.5, temperature=None)
    s = result.variants["jump"].summary
    assert s["failure_reason"].startswith("total energy jumped")
    # NVT does not check energy jumps (the thermostat exchanges energy)
    result = run_md({"jump": PairSprings(jump_below=1.5)}, two_atoms(), steps=50, timestep=0.5,
                    ensemble="nvt", temperature=300.0, thermostat="bussi")
    assert result.variants["jump"].summary["failure_reason"] is None


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("ensemble", ["nve", "nvt"])
def test_resume_continues_from_checkpoint(tmp_path, ensemble):
    """Interrupted at step 37 (checkpoint every 10), resumed: same records, trajectory
    and final state as an uninterrupted run, thermostat random numbers included."""
    from ase.io.trajectory import Trajectory

    kwargs = dict(steps=60, timestep=1.0, temperature=50.0, interval=3, checkpoint_every=10, ensemble=ensemble,
                  distance_cutoff=4.5)
    calc = lambda: LennardJones(sigma=3.4, epsilon=0.0104, rc=8.5, smooth=True)  # noqa: E731
    full = run_md({"lj": calc()}, lj_cluster(), out=str(tmp_path / "full"), **kwargs)

    def stop(name, step, atoms):
        if step == 37:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_md({"lj": calc()}, lj_cluster(), out=str(tmp_path / "cut"), callback=stop, **kwargs)
    state = _load(tmp_path / "cut" / "lj.state.json")
    assert state["step"] == 30 and not state["finished"]
    seen = []
    resumed = run_md({"lj": calc()}, lj_cluster(), out=str(tmp_path / "cut"), resume=True,
                     callback=lambda n, step, a: seen.append(step), **kwargs)
    assert seen[0] == 31 and seen[-1] == 60
    a, b = full.variants["lj"], resumed.variants["lj"]
    assert np.array_equal(a.records["step"], b.records["step"])
    np.testing.assert_allclose(b.records["etot_eV"], a.records["etot_eV"], rtol=0, atol=1e-12)
    with Trajectory(str(tmp_path / "full" / "lj.traj")) as ta, Trajectory(str(tmp_path / "cut" / "lj.traj")) as tb:
        assert len(ta) == len(tb) == 21
        np.testing.assert_allclose(tb[-1].positions, ta[-1].positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tb[-1].get_momenta(), ta[-1].get_momenta(), rtol=0, atol=1e-12)
    with open(tmp_path / "cut" / "lj.log") as handle:
        assert sum(1 for line in handle if not line.startswith("#")) == 21
    # a finished run is not run again
    again = run_md({"lj": calc()}, lj_cluster(), out=str(tmp_path / "cut"), resume=True,
                   callback=lambda *args: pytest.fail("should not step"), **kwargs)
    assert again.variants["lj"].summary["steps_done"] == 60


def test_bad_options():
    with pytest.raises(MDError, match="ensemble"):
        run_md({"lj": LennardJones()}, lj_cluster(), ensemble="npt")
    with pytest.raises(MDError, match="unknown variant"):
        run_md(MODEL, lj_cluster(), variants=["raw", "banana"])
    with pytest.raises(MDError, match="resume"):
        run_md({"lj": LennardJones()}, lj_cluster(), resume=True)


def _cli(argv):
    from ase_symdiag import cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_md_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)


def test_md_cli_three_variants(tmp_path, capsys):
    import ase.io
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    structure = tmp_path / "cu.extxyz"
    ase.io.write(structure, atoms)
    variants = "raw,symmetrized,corrected"
    out = tmp_path / "md"
    code = _cli(["md", MODEL, str(structure), "--variants", variants, "--steps", "10", "--timestep", "2",
                 "--quadrature", "O", "--out", str(out), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in variants.split(","):
        assert any(line.startswith(name) for line in printed.splitlines()), printed
        summary = _load(out / f"{name}.json")
        assert summary["steps_done"] == 10 and summary["failure_reason"] is None
        assert summary["pressure_mean_GPa"] is not None
    assert (out / "md.png").stat().st_size > 10_000
    # the corrected variant really is corrected (periodic: net force only, no torque)
    assert _load(out / "corrected.json")["description"] == (
        "corrected (net_force; no effect here: conservative forces already sum to zero)"
    )
    assert _load(out / "summary.json")["settings"]["variants"]["symmetrized"].endswith(", 48 ops)")


def test_corrected_variant_applies_corrections():
    """make_calculator("corrected") really applies the corrections (net force, and net
    torque for finite structures only): the forces sum to zero."""
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.md import make_calculator

    handle = ModelHandle.load(MODEL)
    finite = Atoms("Cu3", positions=[[0, 0, 0], [2.4, 0.1, 0], [1.1, 2.0, 0.3]])
    periodic = Atoms("Cu3", positions=finite.positions, cell=[8.0, 8.0, 8.0], pbc=True)
    for atoms, names in ((finite, ["net_force", "net_torque"]), (periodic, ["net_force"])):
        calc = make_calculator("corrected", handle, atoms)
        assert calc.parameters["corrections"] == names
        atoms.calc = calc
        np.testing.assert_allclose(atoms.get_forces().sum(axis=0), 0.0, atol=1e-10)
    with pytest.raises(MDError, match="unknown variant"):
        make_calculator("banana", handle, finite)


def test_corrected_variant_says_what_it_does():
    from ase_symdiag.md.variants import corrected_description

    crystal = Atoms("Cu", cell=[3, 3, 3], pbc=True)
    molecule = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    assert "no effect here" in corrected_description(crystal)
    assert "net_torque" in corrected_description(molecule) and "no effect" not in corrected_description(molecule)


def test_bad_quadrature_is_an_md_error():
    with pytest.raises(MDError, match="symmetrized"):
        run_md(MODEL, lj_cluster(), variants="symmetrized", symmetrize="banana", steps=1)
