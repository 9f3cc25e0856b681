"""``md --engine torchsim`` (run_md_batched) on a TorchSim model that is not metatomic."""

import numpy as np
import pytest
from ase.cluster import Icosahedron

pytest.importorskip("torch_sim")

from ase_symdiag.md.torchsim import run_md_batched  # noqa: E402
from torchsim_planted import PlantedModel, lennard_jones  # noqa: E402


def _cluster():
    atoms = Icosahedron("Cu", 2)  # 13 atoms
    atoms.rattle(0.05, seed=3)
    return atoms


def _interrupt_at(step_to_stop):
    def callback(name, step, state):
        if step == step_to_stop:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("variant", ["symmetrized", "stochastic"])
def test_symmetrized_torchsim_model_runs_and_resumes_bit_exactly(tmp_path, variant):
    model = PlantedModel(lennard_jones(), a=0.02, b=0.01)
    kwargs = dict(replicas=2, temperatures=[300], ensemble="nvt", steps=8, timestep=2.0, interval=1,
                  checkpoint_every=3, plot=False, symmetrize=2)
    full, part = tmp_path / "full", tmp_path / "part"
    result = run_md_batched(model, _cluster(), [variant], out=str(full), **kwargs)
    assert result.variants[variant].description.startswith(variant)
    assert all(r["summary"]["steps_done"] == 8 for r in result.variants[variant].replicas)
    with pytest.raises(KeyboardInterrupt):
        run_md_batched(model, _cluster(), [variant], out=str(part), callback=_interrupt_at(5), **kwargs)
    run_md_batched(model, _cluster(), [variant], out=str(part), resume=True, **kwargs)
    for suffix in (".log", ".json", ".state.json"):
        assert (full / f"{variant}{suffix}").read_text() == (part / f"{variant}{suffix}").read_text(), suffix


def test_symmetrized_variant_removes_the_planted_net_force(tmp_path):
    """The planted lambda = 1 term pushes the raw cluster (net force -a e per atom);
    the symmetrized model has none, so its total momentum stays zero."""
    model = PlantedModel(lennard_jones(), a=0.05)
    result = run_md_batched(model, _cluster(), ["raw", "symmetrized"], replicas=1, temperatures=[300], ensemble="nve",
                            steps=20, timestep=2.0, interval=20, plot=False, symmetrize="Ci")
    momentum = {name: v.replicas[0]["records"]["momentum"][-1] for name, v in result.variants.items()}
    assert momentum["raw"] > 0.1 and momentum["symmetrized"] < 1e-9


def test_chunked_model_equals_one_call_and_bounds_every_call():
    """ChunkedModel: the outputs of one call on the whole state, from calls of at most
    ``chunk_atoms`` atoms (systems kept whole, in order)."""
    import torch
    import torch_sim as ts
    from ase.build import bulk

    from ase_symdiag.md.torchsim_models import ChunkedModel

    inner = PlantedModel(lennard_jones(), a=0.02, b=0.01)
    sizes = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.device, self.dtype, self.compute_stress = inner.device, inner.dtype, inner.compute_stress

        def forward(self, state):
            sizes.append(int(state.n_atoms))
            return inner(state)

    crystals = []
    for k, repeat in enumerate([(2, 2, 2), (1, 1, 2), (2, 2, 2), (1, 2, 2)]):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
        atoms.rattle(0.05, seed=k)
        crystals.append(atoms)
    state = ts.io.atoms_to_state(crystals, device=inner.device, dtype=inner.dtype)
    whole = inner(state)
    chunked = ChunkedModel(Counting(), chunk_atoms=40)(state)
    assert sizes and max(sizes) <= 40 and sum(sizes) == state.n_atoms and len(sizes) > 1
    assert set(chunked) == set(whole)
    for name in whole:
        np.testing.assert_allclose(chunked[name].detach().numpy(), whole[name].detach().numpy(), rtol=1e-12, atol=1e-12)
