"""md/common.py: what both MD engines share."""

import pytest
from ase.build import molecule

pytest.importorskip("torch_sim")
pytest.importorskip("metatomic_torchsim")

from ase_symdiag.md import MDError, run_md  # noqa: E402
from ase_symdiag.md.torchsim import run_md_batched  # noqa: E402


@pytest.fixture
def water():
    return molecule("H2O")


@pytest.mark.parametrize("arguments", [
    dict(ensemble="npt"),
    dict(thermostat="nose-hoover"),
    dict(steps=-1),
    dict(interval=0),
    dict(checkpoint_every=0),
    dict(timestep=0.0),
    dict(resume=True),
], ids=lambda a: next(iter(a)))
def test_both_engines_refuse_the_same_arguments_with_one_message(water, arguments):
    """The ASE runner and the batched engine check their common arguments in one place:
    the same bad input, the same one-line error, before any model is touched."""
    messages = []
    for run in (run_md, run_md_batched):
        with pytest.raises(MDError) as info:
            run(None, water, "raw", **arguments)
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "\n" not in messages[0]


def test_both_engines_refuse_an_output_that_is_a_file(water, tmp_path):
    path = tmp_path / "taken"
    path.write_text("")
    for run in (run_md, run_md_batched):
        with pytest.raises(MDError, match="is not a directory"):
            run(None, water, "raw", out=str(path))
