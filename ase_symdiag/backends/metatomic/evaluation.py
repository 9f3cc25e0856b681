"""Batched model evaluation of one structure under many O(3) operations.

Rotating a structure (atoms and cell together, ``x' = x R^T``) does not change its
graph: the same atom pairs and cell shifts are neighbours. :func:`evaluate` builds
the neighbour lists once with vesin and, for each operation, recomputes only the
pair vectors ``d' = x'_j - x'_i + S cell'`` in torch, so autograd reaches positions
and strain directly. The rotated copies go through the model ``batch_size`` at a
time, in one call each. All returned outputs are in the *rotated* frame; the
back-transformation lives in :mod:`ase_symdiag.o3.transforms`.

Units: energy eV, forces eV/Å, stress eV/Å^3 (``dE/d(strain) / V``, ASE's sign).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ase_symdiag.errors import ModelEvaluationError, StructureError
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.structures import Structure


@dataclass
class Predictions:
    """Outputs for one structure under ``K`` operations (rotated frame, float64).

    ``energy`` (K,); ``forces`` (K, N, 3); ``stress`` (K, 3, 3); ``energies``
    (K, N) per-atom energies; ``direct_forces``/``direct_stress`` from the model's
    non-conservative heads; ``features`` maps per-atom feature outputs to
    (K, N, d) arrays. Absent outputs are ``None``.
    """

    energy: np.ndarray
    forces: Optional[np.ndarray] = None
    stress: Optional[np.ndarray] = None
    energies: Optional[np.ndarray] = None
    direct_forces: Optional[np.ndarray] = None
    direct_stress: Optional[np.ndarray] = None
    features: Optional[Dict[str, np.ndarray]] = None


@dataclass
class _Graph:
    options: object  # metatomic NeighborListOptions
    samples: object  # metatensor Labels (first_atom, second_atom, cell_shift_a/b/c)
    first: torch.Tensor  # (E,) long
    second: torch.Tensor  # (E,) long
    shifts: torch.Tensor  # (E, 3) float, integer cell shifts
    components: list  # [Labels("xyz")], built once
    properties: object  # Labels("distance"), built once


def model_error_message(error: BaseException) -> str:
    """The useful line of an exception raised inside a TorchScript model."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    for line in reversed(lines):
        for prefix in ("RuntimeError:", "ValueError:", "builtins.ValueError:", "Exception:"):
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    return lines[-1]


def _tensors(handle: ModelHandle, structure: Structure):
    types = torch.tensor(structure.numbers, dtype=torch.int32, device=handle.device)
    positions = torch.tensor(structure.positions, dtype=handle.dtype, device=handle.device)
    cell = torch.tensor(structure.cell, dtype=handle.dtype, device=handle.device)
    pbc = torch.tensor(structure.pbc, dtype=torch.bool, device=handle.device)
    return types, positions, cell, pbc


def build_graphs(handle: ModelHandle, structure: Structure) -> List[_Graph]:
    """Neighbour lists requested by the model, computed once by vesin."""
    import vesin.metatomic
    from metatomic.torch import System

    from metatensor.torch import Labels

    types, positions, cell, pbc = _tensors(handle, structure)
    system = System(types, positions, cell, pbc)
    components = [Labels("xyz", torch.tensor([[0], [1], [2]], device=handle.device))]
    properties = Labels("distance", torch.tensor([[0]], device=handle.device))
    graphs = []
    for options in handle.neighbor_list_options():
        calculator = vesin.metatomic.NeighborList(options, length_unit="angstrom")
        block = calculator.compute(system, copy=True)
        samples = block.samples.to(handle.device)
        values = samples.values
        graphs.append(
            _Graph(
                options=options,
                samples=samples,
                first=values[:, 0].to(torch.long),
                second=values[:, 1].to(torch.long),
                shifts=values[:, 2:5].to(dtype=handle.dtype),
                components=components,
                properties=properties,
            )
        )
    return graphs


def _neighbor_block(graph: _Graph, vectors: torch.Tensor):
    """A metatomic neighbour-list block holding ``vectors`` (E, 3) for ``graph``'s pairs."""
    from metatensor.torch import TensorBlock

    return TensorBlock(
        vectors.reshape(-1, 3, 1),
        samples=graph.samples,
        components=graph.components,
        properties=graph.properties,
    )


def _per_system(block, n_systems: int, n_atoms: int, width: int) -> torch.Tensor:
    """Per-atom block values -> (n_systems, n_atoms, width), ordered by (system, atom)."""
    values = block.values.reshape(block.values.shape[0], -1)[:, :width]
    samples = block.samples.values.to(torch.long)
    out = torch.zeros(n_systems, n_atoms, width, dtype=values.dtype, device=values.device)
    out[samples[:, 0], samples[:, 1]] = values
    return out


def evaluate(
    handle: ModelHandle,
    structure: Structure,
    rotations: Optional[np.ndarray] = None,
    *,
    forces: bool = True,
    stress: bool = True,
    energies: bool = False,
    direct: bool = False,
    features: Sequence[str] = (),
    batch_size: int = 16,
    graphs: Optional[List[_Graph]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Predictions:
    """Evaluate ``structure`` rotated by each of ``rotations`` ((K, 3, 3), default identity).

    ``forces``/``stress``: conservative, by autograd (stress only for fully periodic
    structures). ``energies``: per-atom energies (if the model has them). ``direct``:
    the model's non-conservative forces/stress heads (if it has them). ``features``:
    names of per-atom feature outputs, returned without any transformation. ``progress`` is called with the number
    of operations done after each batch.
    """
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, System

    handle.check_types(structure.numbers, structure.label)
    if rotations is None:
        rotations = np.eye(3)[None]
    n_ops = len(rotations)
    n_atoms = len(structure)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stress = stress and structure.periodic
    energies = energies and handle.per_atom_energy
    want_direct_forces = direct and handle.has_direct_forces
    want_direct_stress = direct and handle.has_direct_stress and structure.periodic
    need_grad = forces or stress

    if graphs is None:
        try:
            graphs = build_graphs(handle, structure)
        except Exception as error:
            raise StructureError(
                f"{structure.label}: neighbour list failed: {model_error_message(error)}"
            ) from None

    requested: Dict[str, object] = {
        handle.energy_key: ModelOutput(unit="eV", sample_kind="atom" if energies else "system")
    }
    if want_direct_forces:
        requested[handle.nc_forces_key] = ModelOutput(unit="eV/Angstrom", sample_kind="atom")
    if want_direct_stress:
        requested[handle.nc_stress_key] = ModelOutput(unit="eV/Angstrom^3", sample_kind="system")
    for name in features:
        requested[name] = ModelOutput(sample_kind="atom")
    options = ModelEvaluationOptions(length_unit="angstrom", outputs=requested)

    types, base_positions, base_cell, pbc = _tensors(handle, structure)
    rot = torch.tensor(np.asarray(rotations), dtype=handle.dtype, device=handle.device)
    volume = structure.volume

    chunks: Dict[str, list] = {}

    def keep(name: str, value: torch.Tensor) -> None:
        chunks.setdefault(name, []).append(value.detach().to("cpu", torch.float64).numpy())

    for start in range(0, n_ops, batch_size):
        stop = min(start + batch_size, n_ops)
        # one batched leaf per quantity: (B, N, 3) positions and (B, 3, 3) strains
        positions = (base_positions.unsqueeze(0) @ rot[start:stop].transpose(1, 2)).detach()
        cell = (base_cell.unsqueeze(0) @ rot[start:stop].transpose(1, 2)).detach()
        if forces:
            positions.requires_grad_(True)
        leaf_positions = positions
        if stress:
            strain = torch.eye(3, dtype=handle.dtype, device=handle.device).repeat(stop - start, 1, 1)
            strain.requires_grad_(True)
            positions = positions @ strain
            cell = cell @ strain
        vectors = [
            positions[:, graph.second] - positions[:, graph.first] + graph.shifts.unsqueeze(0) @ cell
            for graph in graphs
        ]
        systems = []
        for b in range(stop - start):
            system = System(types, positions[b], cell[b], pbc)
            for graph, pair_vectors in zip(graphs, vectors):
                system.add_neighbor_list(graph.options, _neighbor_block(graph, pair_vectors[b]))
            systems.append(system)

        with torch.set_grad_enabled(need_grad):
            try:
                outputs = handle.model(systems, options, check_consistency=False)
            except Exception as error:
                raise ModelEvaluationError(
                    f"model '{handle.source}' failed on {structure.label or 'structure'} "
                    f"(pbc={structure.pbc.tolist()}): {model_error_message(error)}"
                ) from None
        n_batch = stop - start
        energy_block = outputs[handle.energy_key].block()
        if energies:
            per_atom = _per_system(energy_block, n_batch, n_atoms, 1)[..., 0]
            keep("energies", per_atom)
            total = per_atom.sum(dim=1)
        else:
            order = energy_block.samples.values[:, 0].to(torch.long)
            total = torch.zeros(n_batch, dtype=energy_block.values.dtype, device=handle.device)
            total[order] = energy_block.values.reshape(-1)
        keep("energy", total)

        if need_grad:
            targets = ([leaf_positions] if forces else []) + ([strain] if stress else [])
            grads = torch.autograd.grad(total.sum(), targets, allow_unused=True)
            grads = [_zero_if_none(g, t) for g, t in zip(grads, targets)]
            if forces:
                keep("forces", -grads[0])
            if stress:
                keep("stress", grads[-1] / volume)
        if want_direct_forces:
            keep("direct_forces", _per_system(outputs[handle.nc_forces_key].block(), n_batch, n_atoms, 3))
        if want_direct_stress:
            block = outputs[handle.nc_stress_key].block()
            order = block.samples.values[:, 0].to(torch.long)
            values = torch.zeros(n_batch, 3, 3, dtype=block.values.dtype, device=handle.device)
            values[order] = block.values.reshape(-1, 3, 3)
            keep("direct_stress", values)
        for name in features:
            block = outputs[name].block()
            keep("feature:" + name, _per_system(block, n_batch, n_atoms, block.values[0].numel()))
        if progress is not None:
            progress(n_batch)

    def joined(name: str) -> Optional[np.ndarray]:
        return np.concatenate(chunks[name]) if name in chunks else None

    return Predictions(
        energy=joined("energy"),
        forces=joined("forces"),
        stress=joined("stress"),
        energies=joined("energies"),
        direct_forces=joined("direct_forces"),
        direct_stress=joined("direct_stress"),
        features={name: joined("feature:" + name) for name in features} or None,
    )


def _zero_if_none(grad: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad
