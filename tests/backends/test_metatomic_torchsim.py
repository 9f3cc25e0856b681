"""The batched metatomic TorchSim model (ase_symdiag.backends.metatomic.torchsim_model)
against metatomic-torchsim's ``MetatomicModel`` on batches of mixed systems."""

from typing import Dict, List, Optional

import pytest
import torch
from ase.build import bulk
from ase.cluster import Icosahedron
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput, NeighborListOptions, System
from repo import ROOT

ts = pytest.importorskip("torch_sim")
metatomic_torchsim = pytest.importorskip("metatomic_torchsim")

from ase_symdiag.backends.metatomic.evaluation import CHUNK_ATOMS  # noqa: E402
from ase_symdiag.backends.metatomic.torchsim_model import BatchedMetatomicModel, system_chunks  # noqa: E402
from ase_symdiag.errors import ModelError, StructureError, UsageError  # noqa: E402

MODELS = {name: str(ROOT / "models" / name) for name in ("cu-emt-augmented.pt", "morse-equivariant.pt", "morse-broken-l2.pt")}


class HalfListMorse(torch.nn.Module):
    """A Morse-like pair energy over a HALF neighbour list (the shipped models use full lists)."""

    def __init__(self, cutoff: float = 4.0) -> None:
        super().__init__()
        self.cutoff = cutoff
        self._nl = NeighborListOptions(cutoff=cutoff, full_list=False, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self._nl]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        energies: List[torch.Tensor] = []
        for system in systems:
            r = torch.linalg.norm(system.get_neighbor_list(self._nl).values.reshape(-1, 3), dim=1)
            pair = (1.0 - torch.exp(-1.3 * (r - 2.6))) ** 2 - 1.0
            energies.append((pair * (1.0 - r / self.cutoff) ** 2).sum())
        block = TensorBlock(
            torch.stack(energies).reshape(-1, 1),
            samples=Labels("system", torch.arange(len(systems), dtype=torch.int32).reshape(-1, 1)),
            components=[],
            properties=Labels("energy", torch.tensor([[0]])),
        )
        return {"energy": TensorMap(Labels("_", torch.tensor([[0]])), [block])}


@pytest.fixture(scope="module")
def half_list_model(tmp_path_factory):
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="system")}, atomic_types=[29], interaction_range=4.0,
        length_unit="angstrom", supported_devices=["cpu"], dtype="float64",
    )
    path = tmp_path_factory.mktemp("half") / "half-list.pt"
    AtomisticModel(HalfListMorse().eval(), ModelMetadata(), capabilities).save(str(path))
    return str(path)


def periodic_batch():
    """Cu cubic 2x2x2 (32 atoms), a triclinic Cu cell (18), a 13-atom cluster in a box."""
    cubic = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    cubic.rattle(0.05, seed=1)
    triclinic = bulk("Cu", "fcc", a=3.61) * (3, 3, 2)
    triclinic.rattle(0.05, seed=2)
    boxed = Icosahedron("Cu", 2)
    boxed.rattle(0.05, seed=3)
    boxed.center(vacuum=6.0)
    boxed.pbc = True
    return [cubic, boxed, triclinic]


def finite_batch():
    """Two Cu clusters without a cell: 13 and 55 atoms."""
    small, large = Icosahedron("Cu", 2), Icosahedron("Cu", 3)
    small.rattle(0.05, seed=4)
    large.rattle(0.05, seed=5)
    return [large, small]


def _both(path, structures, chunk_atoms):
    periodic = bool(structures[0].pbc.all())
    reference = metatomic_torchsim.MetatomicModel(path, device="cpu", compute_stress=periodic, neighbor_skin=0.0,
                                                  uncertainty_threshold=None)
    batched = BatchedMetatomicModel(path, device="cpu", compute_stress=periodic, chunk_atoms=chunk_atoms)
    state = ts.io.atoms_to_state(structures, device="cpu", dtype=reference.dtype)
    return reference(state), batched(state), reference.dtype


@pytest.mark.parametrize("batch", [periodic_batch, finite_batch])
@pytest.mark.parametrize("chunk_atoms", [None, 0, 40])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_equals_metatomic_torchsim_on_mixed_batches(name, batch, chunk_atoms):
    """Energy, forces and stress of every system equal metatomic-torchsim's to
    round-off, in one call, in default chunks and in greedy chunks of <= 40 atoms."""
    expected, actual, dtype = _both(MODELS[name], batch(), chunk_atoms)
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert actual[key].shape == expected[key].shape
        assert actual[key].dtype == expected[key].dtype
        assert not actual[key].requires_grad
        scale = float(expected[key].abs().max())
        assert scale > 0
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=rtol * scale)


def test_half_neighbour_list_model(half_list_model):
    for structures in (periodic_batch(), finite_batch()):
        expected, actual, _ = _both(half_list_model, structures, 40)
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-10 * float(expected[key].abs().max()))


def test_forces_are_minus_the_energy_gradient():
    """Independent of metatomic-torchsim: a central difference of the energy along
    one coordinate of one atom of the second system equals minus its force."""
    model = BatchedMetatomicModel(MODELS["morse-broken-l2.pt"], compute_stress=True, chunk_atoms=40)
    state = ts.io.atoms_to_state(periodic_batch(), device="cpu", dtype=torch.float64)
    forces = model(state)["forces"]
    atom, h = 40, 1e-5
    energies = []
    for sign in (1, -1):
        moved = state.clone()
        moved.positions[atom, 1] += sign * h
        energies.append(model(moved)["energy"])
    derivative = (energies[0] - energies[1]) / (2 * h)
    assert int(state.system_idx[atom]) == 1
    torch.testing.assert_close(derivative[[0, 2]], torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-9)
    assert abs(float(forces[atom, 1])) > 1e-3
    assert float(derivative[1]) == pytest.approx(-float(forces[atom, 1]), rel=1e-6)


@pytest.mark.parametrize(
    "counts, chunk_atoms, expected",
    [
        ([108] * 64, None, [(k, k + 4) for k in range(0, 64, 4)]),  # 512 // 108 = 4 per call
        ([9] * 64, None, [(0, 32), (32, 64)]),  # 56 per call evened out to 2 x 32
        ([108] * 3, 0, [(0, 3)]),
        ([32, 13, 18, 600, 5], 50, [(0, 2), (2, 3), (3, 4), (4, 5)]),  # a system over budget alone
    ],
)
def test_system_chunks(counts, chunk_atoms, expected):
    chunks = system_chunks(counts, chunk_atoms)
    assert chunks == expected
    budget = CHUNK_ATOMS if chunk_atoms is None else chunk_atoms
    for first, stop in chunks:
        assert budget == 0 or stop - first == 1 or sum(counts[first:stop]) <= budget


def test_errors_are_one_line_symdiag_errors():
    path = MODELS["morse-equivariant.pt"]
    structures = periodic_batch()
    with pytest.raises(UsageError, match="chunk_atoms"):
        BatchedMetatomicModel(path, chunk_atoms=-1)
    with pytest.raises(ModelError, match="does not exist"):
        BatchedMetatomicModel(str(ROOT / "models" / "missing.pt"))
    model = BatchedMetatomicModel(path, compute_stress=True)
    with pytest.raises(UsageError, match="dtype"):
        model(ts.io.atoms_to_state(structures, device="cpu", dtype=torch.float32))
    finite = ts.io.atoms_to_state(finite_batch(), device="cpu", dtype=torch.float64)
    with pytest.raises(StructureError, match="non-zero volume"):
        model(finite)
    gold = finite_batch()
    gold[1].numbers[:] = 79
    with pytest.raises(StructureError, match="Au"):
        BatchedMetatomicModel(path, compute_stress=False)(ts.io.atoms_to_state(gold, device="cpu", dtype=torch.float64))


def test_md_engine_builds_the_batched_model():
    """``md --engine torchsim`` runs metatomic models through BatchedMetatomicModel
    (raw, and inside the corrected, stochastic and symmetrized variants);
    metatomic-torchsim's model only when its Verlet skin is asked for."""
    from ase_symdiag.md.torchsim_models import build_variant

    path = MODELS["morse-broken-l2.pt"]
    atoms = periodic_batch()[0]
    raw, _ = build_variant("raw", path, atoms)
    assert isinstance(raw, BatchedMetatomicModel) and raw.compute_stress
    for kind in ("corrected", "stochastic"):
        assert isinstance(build_variant(kind, path, atoms)[0].inner, BatchedMetatomicModel)
    symmetrized, description = build_variant("symmetrized", path, finite_batch()[1], symmetrize="D2")
    assert isinstance(symmetrized, BatchedMetatomicModel) and not symmetrized.compute_stress
    assert description.startswith("symmetrized (D2")
    skinned, _ = build_variant("raw", path, atoms, neighbor_skin=1.0)
    assert isinstance(skinned, metatomic_torchsim.MetatomicModel)


def test_md_trajectories_equal_metatomic_torchsim():
    """NVE steps of 3 replicas of a Cu cell: the same positions and energies through
    either TorchSim model (paired starts), to round-off."""
    from ase_symdiag.md.torchsim import run_md_batched

    path = MODELS["morse-broken-l2.pt"]
    atoms = periodic_batch()[0]
    reference = metatomic_torchsim.MetatomicModel(path, device="cpu", compute_stress=True, neighbor_skin=0.0,
                                                  uncertainty_threshold=None)
    last = {}

    def keep(name, step, state):
        last[name] = (state.positions.detach().clone(), state.energy.detach().clone())

    run_md_batched(path, atoms, {"batched": BatchedMetatomicModel(path), "reference": reference},
                            replicas=3, temperatures=[600.0], ensemble="nve", steps=6, timestep=2.0, interval=3,
                            plot=False, callback=keep)
    assert last["batched"][0].shape == last["reference"][0].shape == (3 * len(atoms), 3)  # no replica left
    moved = float((last["batched"][0] - torch.tensor(atoms.positions).repeat(3, 1)).abs().max())
    assert moved > 1e-3
    torch.testing.assert_close(last["batched"][0], last["reference"][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(last["batched"][1], last["reference"][1], rtol=0, atol=1e-9)
