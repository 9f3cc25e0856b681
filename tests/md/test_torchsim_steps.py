"""md/torchsim_steps.py: the Bussi rescale of the batched engine."""

import numpy as np
import pytest
import torch
from ase.build import molecule

pytest.importorskip("torch_sim")

from ase_symdiag.md.torchsim_steps import bussi_rescale  # noqa: E402


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
