"""Model specs on the command line: metatomic files, orb-v3-*:CKPT, mace:FILE, module:callable."""

import json

import ase.io
import pytest
import torch
from ase.build import molecule

from ase_symdiag.cli.app import main
from ase_symdiag.errors import ModelError

pytest.importorskip("orb_models")
pytest.importorskip("torch_sim")

from family_models import ORB_NUMPY_WARNING, small_orb, small_orb_regressor  # noqa: E402


@pytest.fixture
def structures_file(tmp_path, crystal):
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=4)
    path = tmp_path / "structures.extxyz"
    ase.io.write(path, [crystal, ethanol])
    return str(path)


@pytest.fixture
def orb_checkpoint(tmp_path):
    """A random direct orb-v3 saved the way orb-models publishes weights (a state_dict)."""
    path = tmp_path / "orb-direct.ckpt"
    torch.save(small_orb_regressor("direct", seed=3).state_dict(), path)
    return str(path)


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_orb_checkpoint_loads_back_through_the_command_line(orb_checkpoint, structures_file, tmp_path, capsys):
    """``ase-symdiag check orb-v3-direct:CKPT structures`` measures the saved model:
    random Orb breaks, equigrad is reported (by autograd), the report names the spec."""
    from ase_symdiag.backends.loading import load_model
    from ase_symdiag.backends.orb import OrbModel

    spec = f"orb-v3-direct:{orb_checkpoint}"
    out = tmp_path / "report.json"
    assert main(["check", spec, structures_file, "-n", "2", "--json", str(out), "-q"]) == 0, capsys.readouterr().err
    assert "equigrad |dE/dtheta|" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["model"] == spec and data["dtype"] == "float64"
    assert data["summary"]["force_rms_per_component_relative"] > 1e-3
    assert [s["method"] for s in data["equigrad"]["structures"]] == ["autograd", "autograd"]
    assert data["equigrad"]["max_eV_per_rad"] > 0
    # the same weights as saved: the loaded model reproduces the original's energies
    loaded = load_model(spec)
    assert isinstance(loaded, OrbModel)
    import torch_sim as ts

    state = ts.io.atoms_to_state([ase.io.read(structures_file, 0)], device=torch.device("cpu"), dtype=torch.float64)
    original = OrbModel(small_orb_regressor("direct", seed=3))
    assert loaded(state)["energy"].item() == pytest.approx(original(state)["energy"].item(), rel=1e-13)
    assert loaded(state)["energy"].item() != pytest.approx(small_orb("direct", seed=4)(state)["energy"].item(), rel=1e-6)


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_module_callable_specs_run_every_kind_of_model(structures_file, tmp_path, capsys):
    """``module:callable`` returning a TorchSim model (batched) or an ASE calculator
    (one call per rotation); both are measured by check (exit 0, JSON written)."""
    for spec in ("family_models:orb_direct", "family_models:orb_calculator"):
        out = tmp_path / "report.json"
        assert main(["check", spec, structures_file, "-n", "2", "--json", str(out), "-q"]) == 0, capsys.readouterr().err
        data = json.loads(out.read_text())
        assert data["summary"]["force_rms_per_component_relative"] > 1e-3
        assert len(data["equigrad"]["structures"]) == 2


def _bad_pickle(tmp_path):
    path = tmp_path / "object.ckpt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module: refused with weights_only
    return f"orb-v3-direct:{path}"


def _wrong_architecture(tmp_path):
    path = tmp_path / "conservative.ckpt"
    torch.save(small_orb_regressor("conservative").state_dict(), path)
    return f"orb-v3-direct:{path}"


def _not_orb(tmp_path):
    path = tmp_path / "linear.ckpt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    return f"orb-v3-conservative:{path}"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("orb-v3-direct:/no/such.ckpt", "does not exist"),
        ("orb-v3-conservative-inf-omat", "downloads nothing at run time"),
        ("orb-v3-direct:https://example.org/x.ckpt", "downloads nothing at run time"),
        ("mace:mace-mp", "downloads nothing at run time"),
        ("mace:/no/such.model", "does not exist"),
        ("no_such_module_xyz:build", "cannot import module"),
        ("family_models:no_such_function", "has no attribute"),
        ("family_models:not_a_model", "expected an ASE calculator or a TorchSim ModelInterface"),
        (_bad_pickle, "weights only"),
        (_wrong_architecture, "does not fit the orb-v3-direct architecture"),
        (_not_orb, "not an orb-v3 state_dict"),
    ],
)
def test_bad_specs_exit_2_in_one_line(spec, message, structures_file, tmp_path, capsys):
    spec = spec(tmp_path) if callable(spec) else spec
    assert main(["check", spec, structures_file, "-n", "1", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ase-symdiag check: error:")
    assert message in err


@pytest.mark.parametrize("command", ["spectrum", "symmetrize"])
@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_other_subcommands_take_orb_specs(command, orb_checkpoint, structures_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    extra = ["--lmax", "1", "--check-orientations", "0"] if command == "spectrum" else ["--quadrature", "1"]
    code = main([command, f"orb-v3-direct:{orb_checkpoint}", structures_file, "--index", "1", *extra, "--json", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["model"] == f"orb-v3-direct:{orb_checkpoint}"


def test_metatomic_only_options_and_commands_are_one_line_errors(orb_checkpoint, structures_file, tmp_path, capsys):
    spec = f"orb-v3-direct:{orb_checkpoint}"
    assert main(["check", spec, structures_file, "--energy-variant", "pbe", "-q"]) == 2
    assert "--energy-variant applies to metatomic models only" in capsys.readouterr().err
    assert main(["symmetrize", spec, structures_file, "--quadrature", "1", "--export", str(tmp_path / "x.pt"), "-q"]) == 2
    assert "--export works on metatomic models only" in capsys.readouterr().err


def test_metatomic_files_load_as_before(equivariant_model):
    from ase_symdiag.backends.loading import load_model
    from ase_symdiag.backends.metatomic.model import ModelHandle

    handle = load_model(equivariant_model, dtype="float64")
    assert isinstance(handle, ModelHandle) and handle.source == equivariant_model
    with pytest.raises(ModelError, match="dtype must be"):
        load_model(equivariant_model, dtype="float16")


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_md_torchsim_runs_symmetrized_orb_from_a_spec_and_resumes_bit_exactly(orb_checkpoint, tmp_path, capsys):
    """``md orb-v3-direct:CKPT --engine torchsim`` runs; the same model (load_model, the
    CLI's route) interrupted and resumed writes the same files bit for bit."""
    from ase_symdiag.backends.loading import load_model
    from ase_symdiag.md.torchsim import run_md_batched

    ethanol = molecule("CH3CH2OH")
    ethanol.center(vacuum=5.0)
    start = tmp_path / "ethanol.xyz"
    ase.io.write(start, ethanol)
    spec = f"orb-v3-direct:{orb_checkpoint}"
    args = ["md", spec, str(start), "--engine", "torchsim", "--variants", "symmetrized", "--steps", "4",
            "--replicas", "2", "--quadrature", "1", "--timestep", "0.5", "--out", str(tmp_path / "cli"), "-q"]
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "cli" / "symmetrized.json").read_text())

    def interrupt(name, step, state):
        if step == 5:
            raise KeyboardInterrupt

    kwargs = dict(replicas=2, temperatures=[300], ensemble="nvt", steps=8, timestep=0.5, interval=1,
                  checkpoint_every=3, plot=False, symmetrize=1)
    full, part = tmp_path / "full", tmp_path / "part"
    run_md_batched(load_model(spec), ethanol, ["symmetrized"], out=str(full), **kwargs)
    with pytest.raises(KeyboardInterrupt):
        run_md_batched(load_model(spec), ethanol, ["symmetrized"], out=str(part), callback=interrupt, **kwargs)
    run_md_batched(load_model(spec), ethanol, ["symmetrized"], out=str(part), resume=True, **kwargs)
    for suffix in (".log", ".json", ".state.json"):
        assert (full / f"symmetrized{suffix}").read_text() == (part / f"symmetrized{suffix}").read_text(), suffix


@pytest.mark.filterwarnings(ORB_NUMPY_WARNING)
def test_compare_takes_an_orb_spec(orb_checkpoint, structures_file, tmp_path, capsys):
    out = tmp_path / "compare.json"
    args = ["compare", f"orb-v3-direct:{orb_checkpoint}", structures_file, "--index", "1", "--variants", "raw,sym:1",
            "-n", "2", "--json", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["model"] == f"orb-v3-direct:{orb_checkpoint}"
