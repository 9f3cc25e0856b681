"""md/common.py and md/torchsim_steps.py: what both MD engines share."""

import numpy as np
import pytest
import torch
from ase.build import molecule

pytest.importorskip("torch_sim")
pytest.importorskip("metatomic_torchsim")

from ase_symdiag.md import MDError, run_md  # noqa: E402
from ase_symdiag.md.torchsim import run_md_batched  # noqa: E402
from ase_symdiag.md.torchsim_steps import bussi_rescale  # noqa: E402


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


def test_bussi_rescale_is_the_rescale_of_torchsims_vrescale_step():
    """Our rescale then velocity Verlet gives TorchSim's public nvt_vrescale_step,
    bit for bit from the same generator state (the same draws, the same arithmetic),
    and moves the kinetic energy towards the target."""
    import torch_sim as ts
    from ase import units
    from torch_sim.integrators.md import velocity_verlet_step
    from torch_sim.integrators.nvt import NVTVRescaleState, nvt_vrescale_step
    from torch_sim.models.lennard_jones import LennardJonesModel

    atoms = molecule("CH3CH2OH")
    model = LennardJonesModel(sigma=2.0, epsilon=0.01, cutoff=5.0, dtype=torch.float64)
    rng = np.random.default_rng(0)

    def fresh():
        base = ts.io.atoms_to_state([atoms, atoms], torch.device("cpu"), torch.float64)
        output = model(base)
        momenta = torch.tensor(rng.normal(size=(2 * len(atoms), 3)) * 0.05)
        state = NVTVRescaleState.from_state(base, momenta=momenta, energy=output["energy"], forces=output["forces"])
        state.rng = torch.Generator().manual_seed(3)
        return state

    dt = torch.tensor(1.0 * units.fs, dtype=torch.float64)
    tau = torch.tensor(10.0 * units.fs, dtype=torch.float64)
    kT = torch.tensor([300.0, 900.0], dtype=torch.float64) * units.kB
    ours, theirs = fresh(), fresh()
    theirs.momenta, theirs.rng = ours.momenta.clone(), torch.Generator().manual_seed(3)
    before = ours.calc_kT().clone()
    ours = velocity_verlet_step(bussi_rescale(ours, tau, kT, dt), dt, model)
    theirs = nvt_vrescale_step(model, theirs, dt=dt, kT=kT, tau=tau)
    assert torch.equal(ours.momenta, theirs.momenta) and torch.equal(ours.positions, theirs.positions)
    assert not torch.equal(ours.calc_kT(), before)
