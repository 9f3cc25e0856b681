"""An exception inside an MD step is an error naming the variant and the step, not an
MD failure; non-finite outputs and refused structures stay failures (issue 20)."""

import os

import pytest
from ase.build import fcc111
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron
from repo import ROOT

from ase_symdiag.cli.app import main
from ase_symdiag.errors import ModelEvaluationError, NonFiniteOutputError, StructureError
from ase_symdiag.md import MDError, run_md

MODEL = os.path.join(str(ROOT), "models", "morse-broken-l2.pt")


class RaisingAt(Calculator):
    """Lennard-Jones argon, except that call number ``at_call`` raises ``error``."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, error: Exception, at_call: int):
        super().__init__()
        self.inner = LennardJones(sigma=3.4, epsilon=0.0104, rc=8.5, smooth=True)
        self.error, self.at_call, self.calls = error, at_call, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls == self.at_call:
            raise self.error
        work = self.atoms.copy()
        work.calc = self.inner
        self.results = {"energy": work.get_potential_energy(), "forces": work.get_forces()}


def _argon():
    atoms = Icosahedron("Ar", 2)
    atoms.center(vacuum=5.0)
    return atoms


KWARGS = dict(steps=10, timestep=2.0, temperature=50.0, distance_cutoff=4.5, plot=False)


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), RuntimeError("CUDA error"),
                                   ModelEvaluationError("model 'x' failed on structure")],
                         ids=["bug", "runtime", "model-raises"])
def test_exception_in_a_step_is_an_error(tmp_path, error):
    """Call 4 is step 3 (call 1 is the start): the run stops with an MDError naming the
    variant, the step and the exception (it was recorded as an MD 'failure', exit 0)."""
    with pytest.raises(MDError) as info:
        run_md({"buggy": RaisingAt(error, at_call=4)}, _argon(), out=str(tmp_path / "run"), **KWARGS)
    message = str(info.value)
    assert "variant 'buggy'" in message and "step 3" in message and type(error).__name__ in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "error, reason",
    [(NonFiniteOutputError("model 'x' returned non-finite values"), "non-finite"),
     (StructureError("atoms 0 and 1 are 0 Å apart"), "refused the structure")],
    ids=["non-finite", "collapsed"],
)
def test_non_finite_output_and_refused_structure_are_failures(error, reason):
    """What the calculator refuses about the integrated trajectory (its own NaN
    outputs, coincident atoms) ends the variant as a failure at that step."""
    result = run_md({"unstable": RaisingAt(error, at_call=4)}, _argon(), **KWARGS)
    summary = result.variants["unstable"].summary
    assert reason in summary["failure_reason"]
    assert summary["failure_time_ps"] == pytest.approx(3 * 2.0 / 1000.0)


@pytest.fixture(scope="module")
def refusing_model(tmp_path_factory):
    """The Morse model exported to refuse mixed periodicity (it raises on a slab)."""
    from ase_symdiag.reference.analytic import export_pair_potential

    path = str(tmp_path_factory.mktemp("refusing") / "refusing.pt")
    export_pair_potential(path, allow_mixed_pbc=False)
    return path


@pytest.mark.parametrize("engine", ["ase", "torchsim"])
def test_cli_model_that_raises_exits_2_naming_step_and_variant(tmp_path, capfd, refusing_model, engine):
    """A model raising on the structure is not an instability: exit 2 with one line
    (the ASE engine exited 0 with a 'calculator error' failure; TorchSim gave a traceback)."""
    if engine == "torchsim":
        pytest.importorskip("torch_sim")
        import importlib.util

        if importlib.util.find_spec("nvalchemiops"):  # its import prints a CUDA notice on machines without GPU
            import nvalchemiops  # noqa: F401
        capfd.readouterr()
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    slab.info.clear()  # adsorbate_info does not go into extxyz
    structure = str(tmp_path / "slab.xyz")
    slab.write(structure)
    argv = ["md", refusing_model, structure, "--out", str(tmp_path / "out"), "--steps", "2", "--variants", "raw",
            "--engine", engine, "--replicas", "1", "-q"]
    assert main(argv) == 2
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "variant 'raw'" in lines[0] and "step 0" in lines[0] and "mixed periodic" in lines[0]


def raising_model(inner, at_call: int):
    """A TorchSim model around ``inner`` whose call number ``at_call`` raises TypeError."""
    from ase_symdiag.md.torchsim_models import _WrappedModel

    class Raising(_WrappedModel):
        def __init__(self):
            super().__init__(inner)
            self.calls = 0

        def forward(self, state, **kwargs):
            self.calls += 1
            if self.calls == at_call:
                raise TypeError("unsupported operand type(s)")
            return self.inner(state)

    return Raising()


def test_torchsim_exception_in_a_step_is_an_error():
    """TorchSim engine: 3 calls at the start (2 warm-up, 1 counted), one per NVE step:
    call 6 is step 3; an MDError names the variant and step (a TypeError escaped)."""
    pytest.importorskip("torch_sim")
    from ase_symdiag.md.torchsim import run_md_batched
    from ase_symdiag.md.torchsim_models import build_variant

    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=3)
    inner, _ = build_variant("raw", MODEL, atoms)
    with pytest.raises(MDError) as info:
        run_md_batched(MODEL, atoms, {"buggy": raising_model(inner, 6)}, replicas=2, ensemble="nve", steps=5,
                       plot=False)
    message = str(info.value)
    assert "variant 'buggy'" in message and "step 3" in message and "TypeError" in message
    assert "\n" not in message
