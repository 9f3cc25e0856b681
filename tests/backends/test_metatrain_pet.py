"""A real metatrain PET (tiny, random weights, float64) through every command, and
our averaged forces against metatomic-ase's SymmetrizedCalculator."""

import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule

from ase_symdiag import SymDiagCalculator
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.cli.app import main


@pytest.fixture
def pet_structures(tmp_path):
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True)
    crystal.rattle(0.05, seed=1)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.02, seed=2)
    path = tmp_path / "pet.extxyz"
    ase.io.write(path, [crystal, ethanol])
    return str(path), crystal, ethanol


def test_metatrain_pet_loads(metatrain_pet):
    handle = ModelHandle.load(metatrain_pet)
    assert handle.dtype.is_floating_point and str(handle.dtype) == "torch.float64"
    assert handle.per_atom_energy and handle.atomic_types == [1, 6, 8, 29]
    assert "feature" in handle.outputs


@pytest.mark.parametrize("which", ["crystal", "ethanol"])
def test_averaged_forces_match_metatomic_ase(metatrain_pet, pet_structures, which):
    """symmetrize='lebedev:2' is metatomic-ase's SymmetrizedCalculator(l_max=2)."""
    from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

    _, crystal, ethanol = pet_structures
    atoms = crystal if which == "crystal" else ethanol
    ours = atoms.copy()
    ours.calc = SymDiagCalculator(metatrain_pet, symmetrize="lebedev:2")
    theirs = atoms.copy()
    theirs.calc = SymmetrizedCalculator(MetatomicCalculator(metatrain_pet), l_max=2)
    forces = ours.get_forces()
    assert np.abs(forces).max() > 1e-3  # random weights still give forces
    with np.errstate(all="ignore"):  # metatomic-ase divides by the zero volume of a molecule
        reference = theirs.get_forces()
        reference_energy = theirs.get_potential_energy()
    difference = np.abs(forces - reference).max()
    print(f"{which}: max |F_ours - F_metatomic_ase| = {difference:.2e} eV/A")
    assert difference < 1e-10, difference
    assert ours.get_potential_energy() == pytest.approx(reference_energy, abs=1e-10)
    if which == "crystal":
        np.testing.assert_allclose(ours.get_stress(), theirs.get_stress(), atol=1e-10)


COMMANDS = {
    "check": ["-n", "2"],
    "spectrum": ["--lmax", "1"],
    "symmetrize": ["--quadrature", "O", "--export", "{tmp}/pet-sym.pt"],
    "representations": ["--lmax", "1", "--layers", "feature"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_pet_commands(metatrain_pet, pet_structures, tmp_path, capsys, command):
    """Every diagnostic command on the real PET, one (periodic) structure each."""
    path, _, _ = pet_structures
    extra = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command]]
    code = main([command, metatrain_pet, path, "--index", "0", "-q", *extra, "--json", str(tmp_path / "out.json")])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "out.json").read_text())
    if command == "check":
        assert len(data["structures"]) == 1
    if command == "symmetrize":
        assert ModelHandle.load(tmp_path / "pet-sym.pt").energy_key == "energy"
    if command == "representations":
        assert "feature" in capsys.readouterr().out


def test_pet_compare(metatrain_pet, pet_structures, tmp_path, capsys):
    path, _, _ = pet_structures
    assert main(["compare", metatrain_pet, path, "--index", "1", "--variants", "raw,sym:1", "-n", "2"]) == 0
    assert "sym:1" in capsys.readouterr().out


def test_pet_md(metatrain_pet, pet_structures, tmp_path, capsys):
    path, _, _ = pet_structures
    code = main([
        "md", metatrain_pet, path, "--index", "1", "--steps", "3", "--timestep", "0.1", "--quadrature", "lebedev:1",
        "--out", str(tmp_path / "md"), "-q", "--max-force", "1e6", "--max-energy-jump", "1e6", "--min-distance", "0.1",
    ])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert set(summary["variants"]) == {"raw", "symmetrized"}


def test_representations_without_features_is_one_line(broken_model, pet_structures, capsys):
    path, _, _ = pet_structures
    assert main(["representations", broken_model, path, "--index", "0", "--lmax", "1", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no per-atom feature outputs" in err[0]


def test_exported_pet_features_are_the_average_of_the_raw_ones(metatrain_pet, pet_structures, tmp_path):
    """The symmetrized export carries PET's learned features: their quadrature average."""
    from model_outputs import in_process_average, run_outputs

    from ase_symdiag.backends.metatomic.export import export_symmetrized

    _, _, ethanol = pet_structures
    exported = export_symmetrized(metatrain_pet, "O", tmp_path / "sym.pt")
    assert {"feature", "mtt::aux::energy_last_layer_features"} <= set(exported.capabilities().outputs)
    averaged = run_outputs(str(tmp_path / "sym.pt"), ethanol, ["feature"])["feature"]
    assert np.abs(run_outputs(metatrain_pet, ethanol, ["feature"])["feature"] - averaged).max() > 1e-6  # PET's features do turn
    np.testing.assert_allclose(averaged, in_process_average(metatrain_pet, ethanol, "feature", "O"), atol=1e-12)
