"""Batched MD on TorchSim (ase_symdiag.md.torchsim) and survival statistics (ase_symdiag.md.statistics)."""

import json
import os

import numpy as np
import pytest
from repo import ROOT as REPO_ROOT
import torch
from ase import Atoms, units
from ase.cluster import Icosahedron

pytest.importorskip("torch_sim")
pytest.importorskip("metatomic_torchsim")

from ase_symdiag.calculator import SymDiagCalculator  # noqa: E402
from ase_symdiag.cli import main  # noqa: E402
from ase_symdiag.md import MDError  # noqa: E402
from ase_symdiag.md.common import initial_velocities as _initial_velocities  # noqa: E402
from ase_symdiag.md.statistics import (  # noqa: E402
    clopper_pearson,
    exponential_mttf,
    kaplan_meier,
    logrank,
    survival_statistics,
)
from ase_symdiag.md.replicas import seed_for as _seed_for  # noqa: E402
from ase_symdiag.md.torchsim import run_md_batched  # noqa: E402
from ase_symdiag.md.torchsim_models import build_variant, haar_rotations  # noqa: E402
from torch_sim.models.interface import ModelInterface  # noqa: E402

ROOT = str(REPO_ROOT)
MODEL = os.path.join(ROOT, "models", "morse-broken-l2.pt")


def cluster():
    atoms = Icosahedron("Cu", 2)  # 13 atoms
    atoms.rattle(0.05, seed=3)
    return atoms


class Capture:
    """callback(name, step, state): keeps the last state of each variant."""

    def __init__(self):
        self.last = {}

    def __call__(self, name, step, state):
        self.last[name] = (step, state.positions.detach().clone(), state.forces.detach().clone(),
                           state.energy.detach().clone())


def _split(tensor, n_atoms):
    return tensor.numpy().reshape(-1, n_atoms, 3)


def test_batched_forces_match_symdiag_calculator():
    """A few batched steps of the shipped broken Morse model, its symmetrized export
    (Th, exact to degree 2: it removes the planted lambda=2 term, so the average
    matters; D2h would leave this diagonal quadrupole untouched),
    its corrected export and the stochastic variant: every replica's forces and energy
    at the last step equal SymDiagCalculator's at the same quadrature/corrections."""
    atoms = cluster()
    stochastic, _ = build_variant("stochastic", MODEL, atoms, seed=5)
    exported, description = build_variant("corrected", MODEL, atoms, corrected_export=True)
    assert description == "corrected (net_force, net_torque; export)"
    capture = Capture()
    result = run_md_batched(
        MODEL, atoms, {"raw": "raw", "symmetrized": "symmetrized", "corrected": "corrected", "stochastic": stochastic,
                       "corrected_export": exported},
        replicas=2, temperatures=[300, 900], ensemble="nvt", steps=4, timestep=2.0, interval=2,
        symmetrize=2, callback=capture,
    )
    assert result.variants["symmetrized"].description.startswith("symmetrized (Th, 24 ops")
    n = len(atoms)
    calcs = {
        "raw": SymDiagCalculator(MODEL),
        "symmetrized": SymDiagCalculator(MODEL, symmetrize=2),
        "corrected": SymDiagCalculator(MODEL, corrections=["net_force", "net_torque"]),
    }
    calcs["corrected_export"] = calcs["corrected"]
    spread = {}
    for name in ("raw", "symmetrized", "corrected", "stochastic", "corrected_export"):
        step, positions, forces, energy = capture.last[name]
        assert step == 4
        positions, forces = _split(positions, n), _split(forces, n)
        assert positions.shape[0] == 4  # 2 replicas x 2 temperatures, none failed
        for k in range(4):
            probe = atoms.copy()
            probe.positions = positions[k]
            if name == "stochastic":
                rotation = stochastic.last_rotations[k].numpy()
                probe.positions = positions[k] @ rotation.T
                probe.calc = calcs["raw"]
                expected = probe.get_forces() @ rotation
            else:
                probe.calc = calcs[name]
                expected = probe.get_forces()
            np.testing.assert_allclose(forces[k], expected, atol=1e-9, rtol=0)
            np.testing.assert_allclose(float(energy[k]), probe.get_potential_energy(), atol=1e-9, rtol=0)
        spread[name] = forces
    # the comparison is not vacuous: the variants differ from the raw model here
    for name in ("symmetrized", "corrected", "stochastic"):
        probe = atoms.copy()
        probe.positions = _split(capture.last[name][1], n)[0]
        probe.calc = calcs["raw"]
        assert np.abs(spread[name][0] - probe.get_forces()).max() > 1e-4, name
    # corrected: zero net force and net torque (about the centroid) on every replica
    for name in ("corrected", "corrected_export"):
        positions = _split(capture.last[name][1], n)
        for k in range(4):
            f = spread[name][k]
            r = positions[k] - positions[k].mean(axis=0)
            assert np.abs(f.sum(axis=0)).max() < 1e-10
            assert np.abs(np.cross(r, f).sum(axis=0)).max() < 1e-9


def test_haar_rotations_are_orthogonal_and_mixed():
    g = torch.Generator().manual_seed(0)
    q = haar_rotations(400, g)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(q @ q.transpose(1, 2), eye.expand(400, 3, 3), atol=1e-12)
    det = torch.linalg.det(q)
    assert 150 < int((det < 0).sum()) < 250  # O(3): half improper
    q = haar_rotations(50, g, include_inversion=False)
    assert torch.all(torch.linalg.det(q) > 0)


class FreeFlight(ModelInterface):
    """Zero forces (exact straight-line motion); NaN forces on a system whose first
    two atoms are farther apart than ``blowup`` Å."""

    def __init__(self, blowup=3.0):
        super().__init__()
        self._device, self._dtype = torch.device("cpu"), torch.float64
        self._compute_forces, self._compute_stress = True, False
        self.blowup = blowup

    def forward(self, state, **kwargs):
        forces = torch.zeros_like(state.positions)
        pos = state.positions.reshape(state.n_systems, -1, 3)
        far = torch.linalg.norm(pos[:, 0] - pos[:, 1], dim=1) > self.blowup
        forces = torch.where(far[state.system_idx][:, None], torch.full_like(forces, float("nan")), forces)
        return {"energy": torch.zeros(state.n_systems, dtype=torch.float64), "forces": forces}


def test_failures_at_analytic_times_and_survivors_continue(tmp_path):
    """Dimers in free flight from 0.8 Å: each replica collides (distance < 0.5 Å, seen at
    the first record after), flies apart (> 3 Å: NaN forces at that very step) or
    survives; all predicted from its initial velocities."""
    dimer = Atoms("Ar2", positions=[[0, 0, 0], [0.8, 0, 0]])
    replicas, temperatures, dt, steps, interval = 8, [300.0, 2000.0], 1.0, 200, 5
    result = run_md_batched(
        "unused", dimer, {"free": FreeFlight()}, replicas=replicas, temperatures=temperatures, ensemble="nve",
        steps=steps, timestep=dt, interval=interval, max_energy_jump=None, out=str(tmp_path), plot=True,
    )
    outcomes = set()
    for rep in result.variants["free"].replicas:
        r = rep["replica"] % replicas
        start = _initial_velocities(dimer, rep["temperature_K"], _seed_for(0, r, rep["temperature_K"]))
        v = start.get_velocities()
        rel, vrel = start.positions[1] - start.positions[0], (v[1] - v[0]) * units.fs  # Å/fs
        expected = None
        for step in range(1, steps + 1):
            d = np.linalg.norm(rel + vrel * dt * step)
            if d > 3.0:
                expected = (step, "non-finite forces")
                break
            if step % interval == 0 and d < 0.5:
                expected = (step, "atoms")
                break
        s = rep["summary"]
        if expected is None:
            assert s["failure_reason"] is None and s["steps_done"] == steps
            outcomes.add("survived")
        else:
            assert s["failure_step"] == expected[0]
            assert s["failure_reason"].startswith(expected[1])
            outcomes.add(expected[1])
    assert outcomes == {"survived", "atoms", "non-finite forces"}  # all three paths exercised
    stats = json.loads((tmp_path / "survival.json").read_text())
    assert stats["groups"][0]["replicas"] == replicas
    fails = sum(g["failures"] for g in stats["groups"])
    assert fails == sum(rep["summary"]["failure_reason"] is not None for rep in result.variants["free"].replicas)
    assert os.path.getsize(tmp_path / "survival.png") > 0


def _interrupt_at(step_to_stop):
    def callback(name, step, state):
        if step == step_to_stop:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("thermostat,variant,deterministic",
                         [("langevin", "stochastic", False), ("bussi", "raw", False), ("langevin", "corrected", True)])
def test_resume_is_exact(tmp_path, thermostat, variant, deterministic):
    """Interrupted at step 7 (checkpoint at 4), resumed: logs, summaries and the
    checkpoint equal an uninterrupted run bit for bit (thermostat and rotation random
    numbers included; TorchScript's optimized plans warmed up, or not used)."""
    atoms = cluster()
    kwargs = dict(replicas=2, temperatures=[300, 600], ensemble="nvt", thermostat=thermostat, steps=10,
                  timestep=2.0, interval=1, checkpoint_every=4, plot=False, taut=20.0, friction=0.05,
                  deterministic=deterministic, trajectories=thermostat == "bussi")
    full, part = tmp_path / "full", tmp_path / "part"
    run_md_batched(MODEL, atoms, [variant], out=str(full), **kwargs)
    with pytest.raises(KeyboardInterrupt):
        run_md_batched(MODEL, atoms, [variant], out=str(part), callback=_interrupt_at(7), **kwargs)
    with open(part / f"{variant}.log") as handle:
        assert len(handle.readlines()) > 1 + 4 * 5  # the log ran past the checkpoint
    run_md_batched(MODEL, atoms, [variant], out=str(part), resume=True, **kwargs)
    for suffix in (".log", ".json", ".state.json"):
        assert (full / f"{variant}{suffix}").read_text() == (part / f"{variant}{suffix}").read_text(), suffix
    if thermostat == "bussi":  # per-replica trajectories cut back to the checkpoint and extended
        from ase.io.trajectory import Trajectory

        for r in range(4):
            with Trajectory(full / f"{variant}.r{r}.traj") as a, Trajectory(part / f"{variant}.r{r}.traj") as b:
                assert len(a) == len(b) == 11
                assert all(np.array_equal(x.positions, y.positions) and np.array_equal(x.get_momenta(), y.get_momenta())
                           for x, y in zip(a, b))
    summary = json.loads((full / f"{variant}.json").read_text())
    assert len(summary["replicas"]) == 4 and all(s["steps_done"] == 10 for s in summary["replicas"])
    if thermostat == "bussi":  # exchanged energy tracked: conserved energy, finite drift
        assert all(np.isfinite(s["drift_meV_per_atom_per_ps"]) for s in summary["replicas"])


def test_resume_exact_when_replicas_leave(tmp_path):
    """Replicas fail (forces above a low threshold) before and after the checkpoint the
    run resumes from: the batch shrinks, and the resumed files still equal the
    uninterrupted ones."""
    atoms = cluster()
    kwargs = dict(replicas=4, temperatures=[300, 3000], ensemble="nvt", steps=16, timestep=2.0, interval=1,
                  checkpoint_every=4, plot=False, max_force=2.0)
    full, part = tmp_path / "full", tmp_path / "part"
    result = run_md_batched(MODEL, atoms, ["raw"], out=str(full), **kwargs)
    steps = sorted(r["summary"]["failure_step"] for r in result.variants["raw"].replicas
                   if r["summary"]["failure_step"] is not None)
    assert any(s <= 8 for s in steps) and any(8 < s <= 16 for s in steps), steps
    with pytest.raises(KeyboardInterrupt):
        run_md_batched(MODEL, atoms, ["raw"], out=str(part), callback=_interrupt_at(11), **kwargs)
    run_md_batched(MODEL, atoms, ["raw"], out=str(part), resume=True, **kwargs)
    for suffix in (".log", ".json", ".state.json"):
        assert (full / f"raw{suffix}").read_text() == (part / f"raw{suffix}").read_text(), suffix


def test_resume_refuses_changed_settings(tmp_path):
    atoms = cluster()
    kwargs = dict(replicas=1, temperatures=[300], steps=2, timestep=1.0, plot=False, out=str(tmp_path))
    run_md_batched(MODEL, atoms, ["raw"], **kwargs)
    with pytest.raises(MDError, match=r"settings changed \(friction: 0.01 -> 0.02; seed: 0 -> 1\)"):
        run_md_batched(MODEL, atoms, ["raw"], resume=True, friction=0.02, seed=1, **kwargs)


def test_periodic_pressure_and_net_force(crystal):
    """Periodic Cu crystal: pressure recorded (stress from the model), corrected has
    zero net force (no torque correction under PBC)."""
    capture = Capture()
    result = run_md_batched(MODEL, crystal, ["raw", "corrected"], replicas=1, temperatures=[300], steps=2,
                            timestep=1.0, interval=1, callback=capture)
    for name in ("raw", "corrected"):
        summary = result.variants[name].replicas[0]["summary"]
        assert summary["pressure_mean_GPa"] is not None and np.isfinite(summary["pressure_mean_GPa"])
        assert summary["angular_momentum_drift"] is None
    forces = capture.last["corrected"][2].numpy()
    assert np.abs(forces.sum(axis=0)).max() < 1e-10
    assert result.variants["corrected"].description == "corrected (net_force)"
    probe = crystal.copy()
    probe.positions = capture.last["raw"][1].numpy()
    probe.calc = SymDiagCalculator(MODEL)
    record = result.variants["raw"].replicas[0]["records"]
    # the pressure of the last record is -tr(stress)/3 with the kinetic part, as in the ASE runner
    assert record["pressure_GPa"][-1] == pytest.approx(
        -np.mean(probe.get_stress(include_ideal_gas=False)[:3]) / units.GPa, abs=0.5)


def test_cli_arguments(tmp_path, capsys):
    structure = tmp_path / "c.xyz"
    cluster().write(structure)
    assert main([
        "md", MODEL, str(structure), "--engine", "torchsim", "--replicas", "2", "--temperatures", "300,600",
        "--variants", "raw,stochastic", "--steps", "3", "--out", str(tmp_path / "out"), "--ensemble", "nvt", "-q",
    ]) == 0
    text = capsys.readouterr().out
    assert "stochastic" in text and "600" in text and "log-rank p" in text
    stats = json.loads((tmp_path / "out" / "survival.json").read_text())
    assert {(g["variant"], g["temperature_K"]) for g in stats["groups"]} == {
        (v, t) for v in ("raw", "stochastic") for t in (300.0, 600.0)}


# --------------------------------------------------------------------------------------
# statistics, against closed forms and scipy's independent implementations


def test_clopper_pearson_and_exponential_mttf():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-10)
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1 and lo == pytest.approx(0.025 ** (1 / 10), rel=1e-10)
    lo, hi = clopper_pearson(3, 10)
    assert (lo, hi) == pytest.approx((0.0667395, 0.6524529), abs=1e-6)  # standard tables
    # no failure: only a lower bound, -T/ln(alpha/2)... exactly 2T/chi2(0.975, 2) = T/ln(40)
    m = exponential_mttf(10.0, 0)
    assert m["estimate"] is None and m["lower"] == pytest.approx(10.0 / np.log(40.0), rel=1e-10)
    m = exponential_mttf(10.0, 4)
    assert m["estimate"] == 2.5 and m["lower"] < 2.5 < m["upper"]


def test_kaplan_meier_and_logrank_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "logrank"):
        pytest.skip("scipy < 1.11")
    rng = np.random.default_rng(0)
    t_a = np.round(rng.exponential(1.0, 30), 3)
    t_b = np.round(rng.exponential(2.0, 25), 3)
    e_a, e_b = t_a < 1.5, t_b < 1.5
    t_a, t_b = np.minimum(t_a, 1.5), np.minimum(t_b, 1.5)
    km = kaplan_meier(t_a, e_a)
    data = stats.CensoredData(uncensored=t_a[e_a], right=t_a[~e_a])
    res = stats.ecdf(data)
    times = np.array(km["time"][1:])
    np.testing.assert_allclose(km["survival"][1:], res.sf.evaluate(times), atol=1e-12)
    ci = res.sf.confidence_interval(0.95, method="log-log")
    np.testing.assert_allclose(km["lower"][1:], ci.low.evaluate(times), atol=1e-9)
    np.testing.assert_allclose(km["upper"][1:], ci.high.evaluate(times), atol=1e-9)
    ours = logrank(t_a, e_a, t_b, e_b)
    theirs = stats.logrank(data, stats.CensoredData(uncensored=t_b[e_b], right=t_b[~e_b]))
    assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-9)


def test_survival_statistics_groups_and_comparisons():
    def s(t, failed, temp):
        return {"failure_reason": "atoms 0.1 Å apart" if failed else None, "failure_time_ps": t if failed else None,
                "time_ps": t, "temperature_set_K": temp}

    data = {
        "raw": [s(0.1, True, 300), s(0.2, True, 300), s(1.0, False, 300), s(0.5, True, 300)],
        "corrected": [s(1.0, False, 300)] * 4,
    }
    stats = survival_statistics(data, t_max_ps=1.0)
    raw = next(g for g in stats["groups"] if g["variant"] == "raw")
    assert raw["failures"] == 3 and raw["failure_fraction"] == 0.75
    assert raw["median_ttf_ps"] == 0.2  # S drops to 0.5 at t = 0.2
    assert raw["rmst_ps"] == pytest.approx(0.1 * 1 + 0.1 * 0.75 + 0.3 * 0.5 + 0.5 * 0.25)
    assert raw["failure_reasons"] == {"atoms": 3}
    assert raw["mttf_ps"]["estimate"] == pytest.approx((0.1 + 0.2 + 1.0 + 0.5) / 3)
    (comparison,) = stats["comparisons"]
    assert comparison["variant"] == "corrected" and comparison["failures"] == [3, 0]
    assert 0 < comparison["logrank_p"] < 0.1
