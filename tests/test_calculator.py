"""SymDiagCalculator follows ASE's conventions and agrees with metatomic-ase."""

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet
from ase.units import fs

from ase_symdiag import SymDiagCalculator


def _metatomic(path, **kwargs):
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(path, **kwargs)


@pytest.mark.parametrize("fixture", ["crystal", "triclinic", "cluster", "slab"])
@pytest.mark.parametrize("model", ["equivariant_model", "broken_model"])
def test_agrees_with_metatomic_ase(model, fixture, request):
    path = request.getfixturevalue(model)
    atoms = request.getfixturevalue(fixture)
    ours = atoms.copy()
    ours.calc = SymDiagCalculator(path)
    theirs = atoms.copy()
    theirs.calc = _metatomic(path)
    assert ours.get_potential_energy() == pytest.approx(theirs.get_potential_energy(), rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(ours.get_forces(), theirs.get_forces(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.get_potential_energies(), theirs.get_potential_energies(), atol=1e-10)
    if atoms.pbc.all():
        np.testing.assert_allclose(ours.get_stress(), theirs.get_stress(), rtol=1e-10, atol=1e-12)
    else:
        with pytest.raises(PropertyNotImplementedError, match="periodic in all directions"):
            ours.get_stress()


@pytest.mark.parametrize("mode", [True, "forces", "stress"])
def test_non_conservative_agrees_with_metatomic_ase(direct_broken_model, crystal, mode):
    ours = crystal.copy()
    ours.calc = SymDiagCalculator(direct_broken_model, non_conservative=mode)
    theirs = crystal.copy()
    theirs.calc = _metatomic(direct_broken_model, non_conservative=mode)
    forces = ours.get_forces()
    # metatomic-ase removes the net direct force; the planted bias has none
    np.testing.assert_allclose(forces, theirs.get_forces(), atol=1e-10)
    np.testing.assert_allclose(ours.get_stress(), theirs.get_stress(), atol=1e-12)
    conservative = crystal.copy()
    conservative.calc = SymDiagCalculator(direct_broken_model)
    differs = not np.allclose(forces, conservative.get_forces(), atol=1e-6)
    assert differs == (mode in (True, "forces"))


def test_non_conservative_needs_the_heads(broken_model):
    with pytest.raises(ValueError, match="no 'non_conservative_force' output"):
        SymDiagCalculator(broken_model, non_conservative=True)
    with pytest.raises(ValueError, match="non_conservative must be"):
        SymDiagCalculator(broken_model, non_conservative="both")


def test_results_cached_until_atoms_change(equivariant_model, crystal, monkeypatch):
    import ase_symdiag.calculator as module

    calls = []
    original = module.evaluate
    monkeypatch.setattr(module, "evaluate", lambda *a, **k: calls.append(1) or original(*a, **k))
    crystal.calc = SymDiagCalculator(equivariant_model)
    crystal.get_potential_energy()
    crystal.get_forces()
    crystal.get_stress()
    assert len(calls) == 1
    crystal.positions[0, 0] += 0.01
    crystal.get_forces()
    assert len(calls) == 2
    assert set(crystal.calc.results) >= {"energy", "free_energy", "forces", "stress", "energies"}
    assert crystal.calc.results["free_energy"] == crystal.calc.results["energy"]


def test_float32_option(equivariant_model, crystal):
    reference = crystal.copy()
    reference.calc = SymDiagCalculator(equivariant_model)
    single = crystal.copy()
    single.calc = SymDiagCalculator(equivariant_model, dtype="float32")
    assert single.calc.parameters["dtype"] == "float32"
    np.testing.assert_allclose(single.get_forces(), reference.get_forces(), atol=1e-4)
    assert single.get_potential_energy() == pytest.approx(reference.get_potential_energy(), rel=1e-5)


def test_nve_md_conserves_energy(equivariant_model, cluster):
    cluster.calc = SymDiagCalculator(equivariant_model)
    cluster.set_momenta(np.zeros((len(cluster), 3)))
    dyn = VelocityVerlet(cluster, timestep=1.0 * fs)
    energies = []
    dyn.attach(lambda: energies.append(cluster.get_total_energy()))
    dyn.run(20)
    assert np.ptp(energies) < 1e-4


def test_calculator_method_runs_the_check(broken_model, crystal):
    crystal.calc = SymDiagCalculator(broken_model)
    crystal.get_potential_energy()
    report = crystal.calc.check_equivariance(n_rotations=2)
    assert report.structures[0].forces.relative > 1e-4
    assert report.model == broken_model


@pytest.mark.cuda
def test_cuda_agrees_with_cpu(equivariant_model, crystal):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = crystal.copy()
    cpu.calc = SymDiagCalculator(equivariant_model, device="cpu")
    gpu = crystal.copy()
    gpu.calc = SymDiagCalculator(equivariant_model, device="cuda")
    assert gpu.calc.parameters["device"].startswith("cuda")
    np.testing.assert_allclose(gpu.get_forces(), cpu.get_forces(), atol=1e-10)
    np.testing.assert_allclose(gpu.get_stress(), cpu.get_stress(), atol=1e-12)


# ---------------------------------------------------------------- keywords, threads, what is checked


def test_unknown_keywords_are_type_errors(equivariant_model, crystal):
    """``symmetrise=3`` (a typo) used to be stored by ASE's ``set`` and ignored."""
    with pytest.raises(TypeError, match="symmetrise"):
        SymDiagCalculator(equivariant_model, symmetrise=3)
    calc = SymDiagCalculator(equivariant_model, label="run", atoms=crystal)
    assert crystal.calc is calc and calc.label.endswith("run")
    with pytest.raises(TypeError, match="fixed when it is made"):
        calc.set(symmetrize=3)
    assert calc.quadrature is None and calc.set() == {}


def test_shared_calculator_serializes_threads(equivariant_model, crystal, cluster, monkeypatch):
    """Two threads on different structures get their own results (they got each
    other's: ASE's state check, ``self.atoms``, calculation and read of ``results``
    interleaved)."""
    import threading
    import time

    from ase.calculators.calculator import Calculator

    calc = SymDiagCalculator(equivariant_model)
    images = [crystal, cluster]
    expected = []
    for atoms in images:
        copy = atoms.copy()
        copy.calc = calc
        expected.append((copy.get_potential_energy(), copy.get_forces()))

    original = Calculator.calculate

    def slow(self, *args, **kwargs):  # widen the window between storing self.atoms and using it
        original(self, *args, **kwargs)
        time.sleep(0.002)

    monkeypatch.setattr(Calculator, "calculate", slow)
    barrier = threading.Barrier(2)
    wrong, errors = [], []

    def work(k: int) -> None:
        atoms = images[k].copy()
        atoms.calc = calc
        barrier.wait()
        try:
            for step in range(10):
                atoms.positions += 0.1 if step % 2 else -0.1  # a translation: same results, recomputed
                forces, energy = atoms.get_forces(), atoms.get_potential_energy()
                if forces.shape != expected[k][1].shape or not np.allclose(forces, expected[k][1], atol=1e-10) \
                        or energy != pytest.approx(expected[k][0], abs=1e-9):
                    wrong.append(k)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not wrong


def test_check_equivariance_measures_what_the_calculator_returns(broken_model, ethanol):
    """A corrected calculator's check measured the raw model (identical reports)."""
    raw = SymDiagCalculator(broken_model)
    corrected = SymDiagCalculator(broken_model, corrections=["net_force", "net_torque"])
    reports = [calc.check_equivariance(ethanol, n_rotations=3) for calc in (raw, corrected)]
    assert reports[0].model == broken_model
    assert reports[1].model == f"{broken_model} [corrections=net_force+net_torque]"
    np.testing.assert_array_equal(reports[0].operations, reports[1].operations)
    raw_errors, corrected_errors = (np.array(r.structures[0].forces.per_operation_rms_per_component) for r in reports)
    assert raw_errors.min() > 1e-4
    assert np.all(np.abs(corrected_errors - raw_errors) > 1e-6 * raw_errors)
    # the corrected forces are what the report saw: its unrotated forces have no net torque
    atoms = ethanol.copy()
    atoms.calc = corrected
    forces = atoms.get_forces()
    centre = atoms.get_center_of_mass()
    assert np.abs(np.cross(atoms.positions - centre, forces).sum(axis=0)).max() < 1e-10
    # averaging over O removes the planted (pure l = 2) term: exact under random operations
    symmetrized = SymDiagCalculator(broken_model, symmetrize="O").check_equivariance(ethanol, n_rotations=3)
    assert symmetrized.structures[0].forces.relative < 1e-10 < reports[0].structures[0].forces.relative


# ---------------------------------------------------------------- a ModelHandle and its settings


def test_settings_given_with_a_handle_are_honoured(equivariant_model, crystal):
    """device=, dtype= and variant= were ignored when the model was a ModelHandle."""
    import torch

    from ase_symdiag import ModelError, ModelHandle

    handle = ModelHandle.load(equivariant_model)
    single = SymDiagCalculator(handle, dtype="float32")
    assert single.handle.dtype == torch.float32 and single.parameters["dtype"] == "float32"
    assert {t.dtype for t in single.handle.model.buffers() if t.is_floating_point()} == {torch.float32}
    assert handle.dtype == torch.float64  # the given handle and its model are unchanged
    assert {t.dtype for t in handle.model.buffers() if t.is_floating_point()} == {torch.float64}
    ours, reference = crystal.copy(), crystal.copy()
    ours.calc, reference.calc = single, SymDiagCalculator(handle)
    np.testing.assert_allclose(ours.get_forces(), reference.get_forces(), atol=1e-4)
    assert SymDiagCalculator(handle, dtype="float64", device="cpu").handle is handle
    with pytest.raises(ModelError, match=rf"{equivariant_model}: cannot run on device 'mps'"):
        SymDiagCalculator(handle, device="mps")


def test_variant_given_with_a_handle_is_honoured():
    from ase import Atoms

    from edge_models import variant_model

    from ase_symdiag import ModelHandle

    atoms = Atoms("H2O", positions=[[0.0, 0.0, 0.0], [0.7, 0.2, 0.1], [-0.3, 0.8, 0.4]])
    handle = ModelHandle.load(variant_model(), variant="low")
    expected = np.sum(atoms.positions**2)  # energy/low; energy/high is twice that
    for variant, scale in ((None, 1.0), ("low", 1.0), ("high", 2.0)):
        atoms.calc = SymDiagCalculator(handle, variant=variant)
        assert atoms.get_potential_energy() == pytest.approx(scale * expected, rel=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), -2.0 * scale * atoms.positions, atol=1e-12)


def test_check_equivariance_reads_the_atoms_under_the_lock(equivariant_model, crystal, cluster):
    """It read ``self.atoms`` outside the lock: while another thread's calculate holds
    the lock (and is replacing the atoms), it checked the atoms being replaced."""
    import threading

    calc = SymDiagCalculator(equivariant_model)
    crystal.calc = calc
    crystal.get_potential_energy()
    reports = []
    with calc._lock:  # as a calculate running in another thread
        thread = threading.Thread(target=lambda: reports.append(calc.check_equivariance(n_rotations=1)))
        thread.start()
        thread.join(timeout=0.5)  # long enough to read calc.atoms without the lock
        calc.atoms = cluster.copy()  # that calculate's new atoms
    thread.join()
    assert [r.n_atoms for r in reports[0].structures] == [len(cluster)]
