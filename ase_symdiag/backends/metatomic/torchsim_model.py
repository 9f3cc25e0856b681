"""A metatomic model as a batched TorchSim ``ModelInterface``.

:class:`BatchedMetatomicModel` is a drop-in replacement for
``metatomic_torchsim.MetatomicModel`` (conservative forces and stress, no Verlet skin,
no uncertainty warnings) with the same outputs and units, built for throughput on
many systems at once:

- neighbour pairs ``(i, j, S)`` come from vesin, one call per system and requested
  list, on detached float64 positions; the pair vectors
  ``d = x_j - x_i + S cell`` are then computed in torch for the whole batch in one
  operation, so autograd reaches positions and strain directly (no per-system
  ``register_autograd_neighbors``);
- one strain per system is applied in one batched product (``x' = x E_s``,
  ``cell' = cell E_s``), and forces and stress come from one autograd pass per
  model call;
- the systems go through the model in chunks of at most ``chunk_atoms`` atoms
  (default :data:`ase_symdiag.backends.metatomic.evaluation.CHUNK_ATOMS`; the chunks of
  equal-size systems are evened out by
  :func:`~ase_symdiag.backends.metatomic.evaluation.chunk_size`). Measured on one CPU
  thread: the shipped Cu PET costs 3-4x more per atom on 64 x 108 atoms in ONE call
  than in calls of about 4 systems (an MD step of 64 replicas: 10.7 s against 3.8 s,
  bench/md_throughput.py, docs/md_stability.md), while metatomic-torchsim's
  per-system Python loop and vesin take about 1.6 % of such a call. ``chunk_atoms=0`` puts the whole batch in one call.

Units (metatomic-torchsim's, TorchSim's metal units): energy eV ``(n_systems,)``,
forces eV/Å ``(n_atoms, 3)``, stress eV/Å^3 ``(n_systems, 3, 3)`` =
``dE/d(strain) / |det(cell)|``. Outputs are detached, in the model's dtype; non-finite
values are returned as they are (the MD engines treat them as a replica's failure).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ase_symdiag.backends.metatomic.evaluation import atom_budget, chunk_size, model_error_message
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.errors import ModelError, ModelEvaluationError, StructureError, UsageError

try:  # the ModelInterface base class, when torch-sim is installed
    from torch_sim.models.interface import ModelInterface as _ModelBase
except ImportError:  # pragma: no cover - construction then fails with a clear message
    _ModelBase = None

_PAIR_NAMES = ["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"]


def system_chunks(counts: Sequence[int], chunk_atoms: Optional[int] = None) -> List[Tuple[int, int]]:
    """``[(first, stop), ...]`` ranges of consecutive systems with at most ``chunk_atoms``
    atoms per range (at least one system each; ``chunk_atoms=0``: one range).

    Systems of equal size are split into equal chunks
    (:func:`~ase_symdiag.backends.metatomic.evaluation.chunk_size`: TorchScript
    specialises on shapes); mixed sizes are filled greedily."""
    n = len(counts)
    if n == 0:
        return []
    if chunk_atoms is not None and int(chunk_atoms) == 0:
        return [(0, n)]
    budget = atom_budget(chunk_atoms)
    if budget < 1:
        raise UsageError(f"chunk_atoms must be >= 0, got {chunk_atoms}")
    if len(set(counts)) == 1:
        step = chunk_size(int(counts[0]), n, None, budget)
        return [(start, min(start + step, n)) for start in range(0, n, step)]
    ranges, first, atoms = [], 0, 0
    for index, count in enumerate(counts):
        if index > first and atoms + count > budget:
            ranges.append((first, index))
            first, atoms = index, 0
        atoms += int(count)
    ranges.append((first, n))
    return ranges


class _Pairs:
    """Neighbour pairs of one requested list over the whole batch (global atom indices)."""

    def __init__(self, first: torch.Tensor, second: torch.Tensor, shifts: torch.Tensor, labels: torch.Tensor,
                 offsets: np.ndarray) -> None:
        self.first = first  # (E,) long, global atom index
        self.second = second  # (E,) long
        self.shifts = shifts  # (E, 3) model dtype, integer cell shifts
        self.labels = labels  # (E, 5) int32: local first, local second, shift a/b/c
        self.offsets = offsets  # (n_systems + 1,) pair offsets per system


def _neighbor_pairs(calculator, points: np.ndarray, cells: np.ndarray, pbc: np.ndarray, atom_offsets: np.ndarray,
                    device: torch.device, dtype: torch.dtype) -> _Pairs:
    """Pairs of ``calculator`` (a ``vesin.NeighborList``) in every system; ``points``
    (N, 3) and ``cells`` (S, 3, 3) float64, rows are cell vectors."""
    blocks, offsets = [], [0]
    for s in range(len(cells)):
        start, stop = atom_offsets[s], atom_offsets[s + 1]
        pairs, shifts = calculator.compute(points=points[start:stop], box=cells[s], periodic=pbc, quantities="PS")
        blocks.append(np.concatenate([np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
                                      np.asarray(shifts, dtype=np.int64).reshape(-1, 3)], axis=1))
        offsets.append(offsets[-1] + len(pairs))
    local = np.concatenate(blocks) if blocks else np.zeros((0, 5), dtype=np.int64)
    offsets = np.asarray(offsets)
    owner = np.repeat(np.arange(len(cells)), np.diff(offsets))
    shift_atoms = atom_offsets[:-1][owner]
    return _Pairs(
        first=torch.from_numpy(local[:, 0] + shift_atoms).to(device),
        second=torch.from_numpy(local[:, 1] + shift_atoms).to(device),
        shifts=torch.from_numpy(local[:, 2:5]).to(device=device, dtype=dtype),
        labels=torch.from_numpy(local.astype(np.int32)).to(device),
        offsets=offsets,
    )


class BatchedMetatomicModel(_ModelBase if _ModelBase is not None else torch.nn.Module):
    """A metatomic model (path, AtomisticModel or :class:`ModelHandle`) as a TorchSim
    model: ``forward(state) -> {"energy": (S,), "forces": (N, 3), "stress": (S, 3, 3)}``.

    ``device``/``variant``: as :meth:`ModelHandle.load` (default: the model's first
    supported device, its default energy). ``compute_stress`` needs cells of non-zero
    volume. ``chunk_atoms``: atoms per model call (default
    :data:`~ase_symdiag.backends.metatomic.evaluation.CHUNK_ATOMS`, 0: one call).
    Models that request extra inputs (masses, charges, ...) are refused, as
    metatomic-torchsim does.
    """

    def __init__(self, model, *, device: Union[str, torch.device, None] = None, variant: Optional[str] = None,
                 compute_forces: bool = True, compute_stress: bool = True, chunk_atoms: Optional[int] = None) -> None:
        if _ModelBase is None:
            raise ModelError("BatchedMetatomicModel needs torch-sim-atomistic: pip install -e \".[torchsim]\"")
        super().__init__()
        import vesin
        from metatensor.torch import Labels
        from metatomic.torch import ModelEvaluationOptions, ModelOutput

        handle = ModelHandle.load(model, device=None if device is None else str(device), variant=variant)
        if handle.requested_inputs:
            raise ModelError(
                f"{handle.source}: the model requests the inputs {sorted(handle.requested_inputs)}, which the "
                "TorchSim engine does not provide"
            )
        if chunk_atoms is not None and int(chunk_atoms) < 0:
            raise UsageError(f"chunk_atoms must be >= 0, got {chunk_atoms}")
        self.handle = handle
        self.model = handle.model
        self.chunk_atoms = chunk_atoms
        self._device = handle.device
        self._dtype = handle.dtype
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._lists = [
            (options, vesin.NeighborList(cutoff=float(options.engine_cutoff("angstrom")), full_list=bool(options.full_list)))
            for options in handle.neighbor_list_options()
        ]
        self._options = ModelEvaluationOptions(
            length_unit="angstrom", outputs={handle.energy_key: ModelOutput(unit="eV", sample_kind="system")}
        )
        self._components = [Labels("xyz", torch.tensor([[0], [1], [2]], device=self._device))]
        self._properties = Labels("distance", torch.tensor([[0]], device=self._device))

    def forward(self, state) -> Dict[str, torch.Tensor]:
        """Energy, forces and stress of every system of ``state`` (a TorchSim ``SimState``,
        atoms ordered by system)."""
        if state.positions.dtype != self._dtype:
            raise UsageError(f"state dtype {state.positions.dtype} does not match the model dtype {self._dtype}")
        system_idx = state.system_idx
        n_sys = int(state.n_systems)
        counts = torch.bincount(system_idx, minlength=n_sys).cpu().numpy()
        if n_sys > 1 and bool((system_idx[1:] < system_idx[:-1]).any()):
            raise UsageError("the state's atoms must be ordered by system")
        atom_offsets = np.concatenate([[0], np.cumsum(counts)])
        self.handle.check_types(torch.unique(state.atomic_numbers).cpu().numpy(), "state")
        cells = state.row_vector_cell.to(self._dtype)  # (S, 3, 3), rows are cell vectors
        pbc = state.pbc.reshape(-1).expand(3).to(torch.bool)
        if self._compute_stress:
            volumes = torch.abs(torch.linalg.det(cells.detach()))
            if bool((volumes == 0).any()):
                raise StructureError("stress needs cells of non-zero volume (compute_stress=False for molecules)")
        points = state.positions.detach().to("cpu", torch.float64).numpy()
        cell_rows = cells.detach().to("cpu", torch.float64).numpy()
        pbc_np = pbc.cpu().numpy()
        pairs = [
            (options, _neighbor_pairs(calculator, points, cell_rows, pbc_np, atom_offsets, self._device, self._dtype))
            for options, calculator in self._lists
        ]
        energy, forces, stress = [], [], []
        types = state.atomic_numbers.to(torch.int32)
        pbc = pbc.to(self._device)
        for first, stop in system_chunks(counts.tolist(), self.chunk_atoms):
            e, f, s = self._evaluate(state.positions, cells, types, pbc, system_idx, pairs, atom_offsets, first, stop)
            energy.append(e)
            forces.append(f)
            stress.append(s)
        results = {"energy": torch.cat(energy)}
        if self._compute_forces:
            results["forces"] = torch.cat(forces)
        if self._compute_stress:
            results["stress"] = torch.cat(stress)
        return results

    def _evaluate(self, positions, cells, types, pbc, system_idx, pairs, atom_offsets, first: int, stop: int):
        """Energy (n,), forces (atoms, 3) or None, stress (n, 3, 3) or None of systems
        ``first:stop``, by one model call and one autograd pass."""
        from metatensor.torch import Labels, TensorBlock
        from metatomic.torch import System

        a0, a1 = int(atom_offsets[first]), int(atom_offsets[stop])
        n = stop - first
        leaf = positions[a0:a1].detach().to(self._dtype)
        cell = cells[first:stop].detach()
        local_idx = system_idx[a0:a1] - first
        with torch.enable_grad():
            if self._compute_forces:
                leaf.requires_grad_(True)
            x = leaf
            if self._compute_stress:
                strain = torch.eye(3, dtype=self._dtype, device=self._device).repeat(n, 1, 1).requires_grad_(True)
                x = torch.einsum("ni,nij->nj", leaf, strain[local_idx])
                cell = cell @ strain
            bounds = [(int(atom_offsets[first + b]), int(atom_offsets[first + b + 1])) for b in range(n)]
            systems = [System(types[start:end], x[start - a0:end - a0], cell[b], pbc)
                       for b, (start, end) in enumerate(bounds)]
            for options, batch in pairs:
                e0, e1 = int(batch.offsets[first]), int(batch.offsets[stop])
                owner = torch.repeat_interleave(torch.arange(n, device=self._device),
                                                torch.from_numpy(np.diff(batch.offsets[first:stop + 1])).to(self._device))
                vectors = (x[batch.second[e0:e1] - a0] - x[batch.first[e0:e1] - a0]
                           + torch.einsum("ei,eij->ej", batch.shifts[e0:e1], cell[owner]))
                for b, system in enumerate(systems):
                    p0, p1 = int(batch.offsets[first + b]), int(batch.offsets[first + b + 1])
                    block = TensorBlock(
                        vectors[p0 - e0:p1 - e0].reshape(-1, 3, 1),
                        samples=Labels(_PAIR_NAMES, batch.labels[p0:p1], assume_unique=True),
                        components=self._components,
                        properties=self._properties,
                    )
                    system.add_neighbor_list(options, block)
            try:
                outputs = self.model(systems, self._options, check_consistency=False)
            except Exception as error:
                raise ModelEvaluationError(
                    f"model '{self.handle.source}' failed on systems {first}-{stop - 1} of the TorchSim state: "
                    f"{model_error_message(error)}"
                ) from None
            block = outputs[self.handle.energy_key].block()
            order = block.samples.values[:, 0].to(torch.long)
            energy = torch.zeros(n, dtype=block.values.dtype, device=self._device).index_put((order,), block.values.reshape(-1))
            targets = ([leaf] if self._compute_forces else []) + ([strain] if self._compute_stress else [])
            grads = torch.autograd.grad(energy.sum(), targets, allow_unused=True) if targets else []
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, targets)]
        forces = -grads[0] if self._compute_forces else None
        stress = None
        if self._compute_stress:
            stress = grads[-1] / torch.abs(torch.linalg.det(cell.detach())).reshape(-1, 1, 1)
        return energy.detach(), forces, stress
