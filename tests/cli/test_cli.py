"""ase-symdiag command line: tables, JSON, exit codes, short errors."""

import json

import ase.io
import pytest

from ase_symdiag.cli.app import main


@pytest.fixture
def structures_file(tmp_path, crystal, cluster):
    path = tmp_path / "structures.extxyz"
    ase.io.write(path, [crystal, cluster])
    return str(path)


def test_check_prints_table_and_writes_json(broken_model, structures_file, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["check", broken_model, structures_file, "-n", "3", "--json", str(out), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "dF rms/comp eV/A" in printed and "0:Cu32" in printed and "1:Cu13" in printed
    data = json.loads(out.read_text())
    assert data["n_operations"] == 3 and data["passed"] is True
    assert len(data["structures"]) == 2
    assert data["summary"]["force_rms_per_component_relative"] > 1e-4
    assert "RMS over operations, atoms and x, y, z" in data["definitions"]["force_rms_per_component_eV_per_A"]


def test_threshold_gates_the_run(broken_model, equivariant_model, structures_file, tmp_path, capsys):
    out = tmp_path / "report.json"
    args = [structures_file, "-n", "2", "--max-relative-force-error", "1e-8", "-q"]
    assert main(["check", equivariant_model, *args]) == 0
    assert main(["check", broken_model, *args, "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAILED: relative force error" in err and "exceeds --max-relative-force-error 1e-08" in err
    data = json.loads(out.read_text())
    assert data["passed"] is False and data["thresholds"] == {"force_rms_per_component_relative": 1e-8}


def test_exact_model_passes_a_tight_relative_gate_on_perfect_crystals(tmp_path, capsys):
    """Round-off over the ~1e-15 eV/Å forces of a perfect crystal read as dF/F = 2."""
    from ase.build import bulk

    from repo import ROOT

    model = str(ROOT / "models" / "morse-equivariant.pt")
    perfect = tmp_path / "perfect.extxyz"
    ase.io.write(perfect, bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2))
    for structures in (str(ROOT / "docs" / "examples" / "structures.extxyz"), str(perfect)):
        out = tmp_path / "report.json"
        args = ["check", model, structures, "--max-relative-force-error", "1e-10", "--json", str(out), "-q"]
        assert main(args) == 0, capsys.readouterr().err
        data = json.loads(out.read_text())
        assert data["passed"] is True and data["summary"]["force_rms_per_component_relative"] < 1e-10
    assert "dF/max(F,1meV/A)" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_non_finite_thresholds_are_refused(equivariant_model, structures_file, capsys, value):
    with pytest.raises(SystemExit) as info:
        main(["check", equivariant_model, structures_file, "--max-force-error", value])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"--max-force-error: expected a finite number >= 0, got '{value}'")


def test_coincident_atoms_exit_2_in_one_line(equivariant_model, tmp_path, capsys):
    from ase import Atoms

    path = tmp_path / "twice.extxyz"
    ase.io.write(path, Atoms("Cu3", positions=[[0, 0, 0], [0, 0, 0], [0, 0, 2.5]]))
    out = tmp_path / "report.json"
    assert main(["check", equivariant_model, str(path), "--max-force-error", "1", "--json", str(out), "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "0:Cu3: atoms 0 and 1 are 0 Å apart" in captured.err
    assert not out.exists() and "passed" not in captured.out


def test_unmeasured_threshold_is_a_usage_error(equivariant_model, cluster, tmp_path, capsys):
    path = tmp_path / "cluster.extxyz"
    ase.io.write(path, cluster)
    assert main(["check", equivariant_model, str(path), "--max-stress-error", "1", "-q"]) == 2
    assert "no structure is periodic in all directions" in capsys.readouterr().err


def test_errors_are_one_line(tmp_path, structures_file, capsys):
    assert main(["check", str(tmp_path / "missing.pt"), structures_file]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"ase-symdiag check: error: model file '{tmp_path / 'missing.pt'}' does not exist"


def test_unreadable_structures(equivariant_model, tmp_path, capsys):
    bad = tmp_path / "bad.extxyz"
    bad.write_text("not\na structure\n")
    assert main(["check", equivariant_model, str(bad)]) == 2
    assert "could not read structures" in capsys.readouterr().err


def test_traceback_flag_reraises(tmp_path, structures_file):
    from ase_symdiag import ModelError

    with pytest.raises(ModelError):
        main(["--traceback", "check", str(tmp_path / "missing.pt"), structures_file])


def test_reference_model_command(tmp_path, structures_file, capsys):
    path = tmp_path / "planted.pt"
    assert main(["reference-model", str(path), "--quadrupole", "0.02"]) == 0
    assert main(["check", str(path), structures_file, "-n", "2", "--max-energy-error", "1e-6", "-q"]) == 1


def test_subcommand_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--help"])
    assert info.value.code == 0
    assert "--max-force-error" in capsys.readouterr().out


def test_spectrum_command(broken_model, structures_file, tmp_path, capsys):
    out, plot = tmp_path / "spectrum.json", tmp_path / "spectrum.png"
    code = main(["spectrum", broken_model, structures_file, "--lmax", "2", "--json", str(out), "--plot", str(plot), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2+" in printed and "forces" in printed
    data = json.loads(out.read_text())
    forces = data["spectra"][0]["outputs"]["forces"]
    assert max(forces["power"], key=forces["power"].get) == "0+"  # the symmetrized part
    breaking = {k: v for k, v in forces["power"].items() if k != "0+"}
    assert max(breaking, key=breaking.get) == "2+"
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_symmetrize_command_chooses_and_exports(broken_model, structures_file, tmp_path, capsys):
    exported, out = tmp_path / "sym.pt", tmp_path / "choice.json"
    code = main(["symmetrize", broken_model, structures_file, "--lmax", "2", "--export", str(exported), "--json", str(out), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "chosen: 'Th' (24 operations" in printed and "3.5x fewer" in printed
    assert "RMS over orientations" in printed and "not a maximum" in printed
    data = json.loads(out.read_text())
    assert data["choice"]["operations"] == 24 and data["choice"]["tolerance_met"] is True
    assert set(data["choice"]["decided_by"]) <= {"energy", "forces", "stress"} and data["choice"]["decided_by"]
    assert exported.exists()


def test_spectrum_shows_what_lies_above_lmax(broken_model, structures_file, tmp_path, capsys):
    """--lmax 0: the planted lambda = 2 term is invisible to Ci; it is the '>0' column, not 0."""
    out = tmp_path / "spectrum.json"
    assert main(["spectrum", broken_model, structures_file, "--lmax", "0", "--json", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    header = next(line.split() for line in printed.splitlines() if line.startswith("structure"))
    assert header[-1] == ">0" and "NOT attributed to channels lambda <= 0" in printed
    for spectrum in json.loads(out.read_text())["spectra"]:
        forces = spectrum["outputs"]["forces"]
        assert forces["unresolved"] > 1e-6 and forces["variance"] == pytest.approx(forces["unresolved"], rel=1e-6)
        assert forces["unit"] == "(eV/A)^2 per atom, summed over x,y,z"


def test_symmetrize_refuses_what_it_did_not_resolve(broken_model, structures_file, tmp_path, capsys):
    """--lmax 0 reported zero breaking and advised no averaging for a model 1.3x over the
    tolerance; now the breaking above lambda = 0 counts and no claim is made (exit 1)."""
    out = tmp_path / "choice.json"
    assert main(["symmetrize", broken_model, structures_file, "--lmax", "0", "--json", str(out), "-q"]) == 1
    printed = capsys.readouterr().out
    assert "tolerance NOT met, no claim made" in printed and "rerun with a larger --lmax" in printed
    assert "chosen:" not in printed and "fewer than the default" not in printed
    choice = json.loads(out.read_text())["choice"]
    assert choice["tolerance_met"] is False and choice["status"] == "not met (refused)"
    assert choice["residual_force_rms_per_component_eV_per_A"] > choice["tolerance_force_rms_per_component_eV_per_A"]


def test_symmetrize_per_output_tolerances(broken_model, structures_file, tmp_path, capsys):
    """Forces and stress tolerances loose, energy tight: the energy decides (and, at
    --lmax 1, its lambda = 2 breaking is unresolved: refused, naming the energy)."""
    out = tmp_path / "choice.json"
    args = ["symmetrize", broken_model, structures_file, "--lmax", "1", "--json", str(out), "-q",
            "--tolerance", "10", "--stress-tolerance", "100", "--energy-tolerance", "1e-6"]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "energy  meV/atom" in printed and "cheapest alone" in printed
    choice = json.loads(out.read_text())["choice"]
    assert choice["decided_by"] == ["energy"]
    assert choice["outputs"]["forces"]["met"] and choice["outputs"]["forces"]["cheapest_alone"] == "C1"
    assert not choice["outputs"]["energy"]["met"]
    assert choice["tolerance_energy_rms_meV_per_atom"] == 1e-6 and choice["tolerance_stress_rms_frobenius_GPa"] == 100


def test_symmetrize_bad_quadrature(broken_model, structures_file, capsys):
    assert main(["symmetrize", broken_model, structures_file, "--quadrature", "nonsense", "-q"]) == 2
    assert "unknown quadrature 'nonsense'" in capsys.readouterr().err


def test_symmetrize_bad_quadrature_is_refused_before_the_model_is_read(tmp_path, structures_file, capsys):
    """--quadrature is checked (o3.quadrature.resolve_quadrature) before the model is loaded."""
    assert main(["symmetrize", str(tmp_path / "missing.pt"), structures_file, "--quadrature", "nonsense", "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown quadrature 'nonsense'" in err and "missing.pt" not in err


def test_representations_command(tmp_path, structures_file, capsys):
    from ase_symdiag.reference.analytic import export_pair_potential

    model = tmp_path / "features.pt"
    export_pair_potential(model, features=True)
    out, plot = tmp_path / "layers.json", tmp_path / "layers.png"
    code = main(["representations", str(model), structures_file, "--lmax", "2", "--json", str(out), "--plot", str(plot), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mtt::features::planted" in printed and "skipped" not in printed
    data = json.loads(out.read_text())
    assert data[str(model)]["skipped"] == {}
    fractions = data[str(model)]["layers"][0]["per_feature_invariant_fraction"]
    assert fractions[0] == pytest.approx(1.0, abs=1e-12) and fractions[1] < 1e-12
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def three_frames(tmp_path, crystal):
    """Three rattled copies of the crystal, frame k named 'frame<k>'."""
    images = []
    for k in range(3):
        atoms = crystal.copy()
        atoms.rattle(0.02, seed=10 + k)
        atoms.info["name"] = f"frame{k}"
        images.append(atoms)
    path = tmp_path / "three.extxyz"
    ase.io.write(path, images)
    return str(path)


@pytest.mark.parametrize("index", ["-5", "3"])
def test_index_out_of_range_exits_2(equivariant_model, three_frames, capsys, index):
    """ASE reads frame 0 for --index=-5 on a 3-frame extxyz; it ran silently."""
    assert main(["check", equivariant_model, three_frames, f"--index={index}", "-n", "1", "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().endswith(f"--index {index} is out of range: '{three_frames}' holds 3 structure(s)")
    assert "frame0" not in captured.out


def test_labels_keep_the_file_frame_numbers(equivariant_model, three_frames, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["check", equivariant_model, three_frames, "--index", "1:", "-n", "1", "-q", "--json", str(out)]) == 0
    assert [s["label"] for s in json.loads(out.read_text())["structures"]] == ["1:frame1", "2:frame2"]
    assert main(["check", equivariant_model, three_frames, "--index=-1", "-n", "1", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "2:frame2" in printed and "0:frame2" not in printed


def test_structures_that_are_a_model_name_what_was_expected(equivariant_model, capsys):
    assert main(["check", equivariant_model, equivariant_model, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "expected a structure file ASE can read (e.g. extxyz, xyz, cif, POSCAR)" in err
    assert "looks like a model file" in err


@pytest.mark.parametrize(
    "thresholds, flag",
    [
        (["--max-force-error", "1e-6"], "--max-direct-force-error 1e-06 (from --max-force-error)"),
        (["--max-relative-force-error", "1e-6"], "--max-relative-direct-force-error 1e-06 (from --max-relative-force-error)"),
        (["--max-direct-force-error", "1e-6"], "--max-direct-force-error 1e-06"),
        (["--max-relative-direct-force-error", "1e-6"], "--max-relative-direct-force-error 1e-06"),
    ],
)
def test_broken_direct_forces_fail_the_gate(direct_broken_model, equivariant_model, structures_file, tmp_path,
                                            capsys, thresholds, flag):
    """Energy and conservative forces exact, direct forces with a planted lambda = 1
    term: the gate passed it (no threshold looked at the direct head)."""
    out = tmp_path / "report.json"
    args = [structures_file, "-n", "2", "-q", *thresholds]
    assert main(["check", equivariant_model, *args]) == 0
    assert main(["check", direct_broken_model, *args, "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAILED: " in err and "direct force error" in err and flag in err
    data = json.loads(out.read_text())
    assert data["passed"] is False
    assert data["summary"]["force_rms_per_component_eV_per_A"] < 1e-12  # only the direct head breaks
    assert data["summary"]["direct_force_rms_per_component_eV_per_A"] > 1e-6


def test_broken_direct_stress_fails_its_gate(tmp_path, structures_file, capsys):
    from ase_symdiag.reference.analytic import export_pair_potential

    model = tmp_path / "quadrupole-direct.pt"
    export_pair_potential(model, quadrupole=0.01, direct=True)
    assert main(["check", str(model), structures_file, "-n", "2", "-q", "--max-direct-stress-error", "1e-6"]) == 1
    assert "FAILED: direct stress error" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--max-direct-force-error", "--max-relative-direct-force-error", "--max-direct-stress-error"])
def test_direct_threshold_without_direct_output_is_a_usage_error(broken_model, equivariant_model, structures_file,
                                                                capsys, option):
    """A direct threshold the run cannot measure: exit 2, never a pass."""
    assert main(["check", broken_model, structures_file, option, "1", "-q"]) == 2  # no direct heads
    assert main(["check", equivariant_model, structures_file, option, "1", "--no-direct", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(f"{option}: not measured" in line for line in err)


def test_inherited_direct_threshold_skips_a_model_without_direct_heads(broken_model, structures_file, tmp_path):
    out = tmp_path / "report.json"
    assert main(["check", broken_model, structures_file, "-n", "2", "-q", "--max-force-error", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["thresholds"] == {"force_rms_per_component_eV_per_A": 1.0}


def test_symmetrize_passes_an_exact_model_on_a_perfect_crystal(tmp_path, capsys):
    """Its 1 % force tolerance was 1 % of round-off forces: 'forces 3.5e-17 ... NO',
    'rerun with a larger --lmax', exit 1."""
    from ase.build import bulk

    from repo import ROOT

    perfect = tmp_path / "perfect.extxyz"
    ase.io.write(perfect, bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2))
    out = tmp_path / "choice.json"
    model = str(ROOT / "models" / "morse-equivariant.pt")
    assert main(["symmetrize", model, str(perfect), "--lmax", "1", "--json", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "NOT met" not in printed and "chosen: 'C1'" in printed
    choice = json.loads(out.read_text())["choice"]
    assert choice["tolerance_met"] is True and choice["tolerance_force_rms_per_component_eV_per_A"] == pytest.approx(1e-5)


@pytest.mark.parametrize("command", ["check", "compare"])
def test_errors_name_the_file_frame(equivariant_model, crystal, tmp_path, capsys, command):
    """Frame 2 (coincident atoms) was called '0:Cu3' after --index 2."""
    from ase import Atoms

    path = tmp_path / "frames.extxyz"
    ase.io.write(path, [crystal, crystal, Atoms("Cu3", positions=[[0, 0, 0], [0, 0, 0], [0, 0, 2.5]])])
    extra = ["--variants", "raw", "-n", "1"] if command == "compare" else ["-n", "1", "-q"]
    assert main([command, equivariant_model, str(path), "--index", "2", *extra]) == 2
    assert "2:Cu3: atoms 0 and 1 are 0 Å apart" in capsys.readouterr().err


@pytest.mark.parametrize("flags, n_improper", [([], 2), (["--no-inversion"], 0)])
def test_no_inversion_samples_proper_rotations_only(equivariant_model, structures_file, tmp_path, flags, n_improper):
    out = tmp_path / "report.json"
    assert main(["check", equivariant_model, structures_file, "-n", "4", "-q", "--json", str(out), *flags]) == 0
    data = json.loads(out.read_text())
    assert (data["n_operations"], data["n_improper"]) == (4, n_improper)


def test_the_old_proper_only_flag_is_gone(equivariant_model, structures_file, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["check", equivariant_model, structures_file, "--proper-only"])
    assert raised.value.code == 2
