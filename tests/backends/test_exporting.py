"""Exports at the edges: units other than eV and Å, dtypes, models without neighbour
lists or with requested inputs, energy variants, and models that cannot run (no file
is ever left behind)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from metatomic.torch import load_atomistic_model

from edge_models import broken_model, inputs_model, nm_kcal_model, variant_model

from ase_symdiag import ModelError, SymDiagError
from ase_symdiag.backends.metatomic.corrected import export_corrected
from ase_symdiag.backends.metatomic.export import export_symmetrized
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.cli.app import main


def _metatomic(path, **options):
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(str(path), check_consistency=True, **options)


@pytest.fixture(scope="module")
def nm_model(tmp_path_factory):
    return nm_kcal_model(tmp_path_factory.mktemp("units") / "nm-kcal.pt")


EXPORTS = {
    "corrected": lambda model, path: export_corrected(model, path),
    "symmetrized": lambda model, path: export_symmetrized(model, path, quadrature="Ci", non_conservative=True),
}


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_direct_outputs_are_in_the_model_units(nm_model, equivariant_model, crystal, tmp_path, kind):
    """A model in nm and kcal/mol: the export's direct forces/stress, converted by
    metatomic-ase from the declared units, equal its conservative ones (the corrected
    export declared eV/Angstrom: 230.6x and 2.3e4x too large) and the forces of the
    same potential written in eV and Å."""
    path = tmp_path / f"{kind}.pt"
    EXPORTS[kind](nm_model, path)
    outputs = load_atomistic_model(str(path)).capabilities().outputs
    assert outputs["non_conservative_force"].unit == "kcal/mol/nm"
    assert outputs["non_conservative_stress"].unit == "kcal/mol/nm^3"
    conservative, direct, reference = crystal.copy(), crystal.copy(), crystal.copy()
    conservative.calc = _metatomic(path)
    direct.calc = _metatomic(path, non_conservative=True)
    reference.calc = _metatomic(equivariant_model)
    forces = reference.get_forces()
    assert np.abs(forces).max() > 0.1  # a rattled crystal: forces well above round-off
    np.testing.assert_allclose(conservative.get_forces(), forces, atol=1e-10)
    np.testing.assert_allclose(direct.get_forces(), forces, atol=1e-10)
    np.testing.assert_allclose(direct.get_stress(), reference.get_stress(), atol=1e-12)
    np.testing.assert_allclose(conservative.get_stress(), reference.get_stress(), atol=1e-12)


@pytest.mark.parametrize("asked, other", [("float64", "float32"), ("float32", "float64")])
def test_export_runs_in_and_declares_the_dtype_asked_for(tmp_path, crystal, asked, other):
    """``symmetrize --dtype X --export`` of a model in the other dtype declared the
    model's dtype (float32 model, float64 asked: params converted in place, a file
    metatomic-ase could not run for models with linear layers; float64 model, float32
    asked: float64 written)."""
    from ase_symdiag.reference.analytic import export_pair_potential

    source = tmp_path / f"{other}.pt"
    export_pair_potential(source, dtype=other, quadrupole=0.01)
    structure = tmp_path / "cu.extxyz"
    crystal.write(structure)
    out = tmp_path / "sym.pt"
    argv = ["symmetrize", str(source), str(structure), "--quadrature", "Ci", "--dtype", asked, "--export", str(out), "-q"]
    assert main(argv) == 0
    exported = load_atomistic_model(str(out))
    assert exported.capabilities().dtype == asked
    tensors = [t for t in list(exported.parameters()) + list(exported.buffers()) if t.is_floating_point()]
    assert tensors and {str(t.dtype) for t in tensors} == {f"torch.{asked}"}
    atoms = crystal.copy()
    atoms.calc = _metatomic(out)
    assert np.isfinite(atoms.get_forces()).all()


def test_loading_in_another_dtype_leaves_the_callers_model_alone(tmp_path):
    from ase_symdiag.reference.analytic import export_pair_potential

    model = export_pair_potential(dtype="float32")
    handle = ModelHandle.load(model, dtype="float64")
    assert {t.dtype for t in model.buffers()} == {torch.float32}
    assert {t.dtype for t in handle.model.buffers()} == {torch.float64}
    exported = export_symmetrized(model, tmp_path / "sym.pt", quadrature="Ci", dtype="float64")
    assert exported.capabilities().dtype == "float64"
    assert {t.dtype for t in model.buffers()} == {torch.float32}


@pytest.mark.parametrize("mode", ["raise", "nan"])
@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_an_export_that_cannot_run_leaves_no_file(tmp_path, mode, kind):
    """The file is written only once it has been loaded back and evaluated: a model
    that raises, or gives NaN, is a SymDiagError and nothing is left in the folder."""
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(SymDiagError, match="was not written") as error:
        EXPORTS[kind](broken_model(mode), folder / "broken.pt")
    assert "\n" not in str(error.value)
    assert ("non-finite values for a test molecule" in str(error.value)) == (mode == "nan")
    assert list(folder.iterdir()) == []


@pytest.fixture
def moving():
    atoms = Atoms("OH2Cu", positions=[[0, 0, 0], [0.9, 0.1, 0.0], [-0.3, 0.9, 0.1], [2.0, 1.0, -1.0]])
    atoms.set_velocities(np.random.default_rng(3).normal(size=(4, 3)))
    return atoms


@pytest.mark.parametrize("neighbors", [False, True])
def test_corrected_export_of_a_model_with_inputs(tmp_path, moving, neighbors):
    """``E = sum_i m_i (v_i . x_i)``: the corrected export (which failed to script without
    a neighbour list, and gave the inner model no masses or velocities) gives
    ``-m_i v_i`` less its mean, with the engine's inputs."""
    path = tmp_path / "corrected.pt"
    export_corrected(inputs_model(neighbors), path, net_torque=False)
    atoms = moving.copy()
    atoms.calc = _metatomic(path, non_conservative="forces")
    momenta = atoms.get_masses()[:, None] * atoms.get_velocities()
    np.testing.assert_allclose(atoms.get_forces(), -(momenta - momenta.mean(axis=0)), atol=1e-10)
    assert np.abs(momenta - momenta.mean(axis=0)).max() > 0.1


def test_export_of_a_model_with_variants_only_says_what_to_do(tmp_path):
    """It said to pass ``variant=``, which export_symmetrized does not take."""
    for export in (lambda m: export_symmetrized(m, tmp_path / "a.pt", quadrature="Ci"), lambda m: export_corrected(m, tmp_path / "b.pt")):
        with pytest.raises(ModelError, match=r"plain 'energy'.*energy variants high, low") as error:
            export(variant_model())
        assert "variant=" not in str(error.value)
    with pytest.raises(ModelError, match=r"not the variant 'energy/high'"):
        export_symmetrized(ModelHandle.load(variant_model(), variant="high"), quadrature="Ci")
    assert list(tmp_path.iterdir()) == []
