"""Batched model evaluation of one structure under many O(3) operations.

Rotating a structure (atoms and cell together, ``x' = x R^T``) does not change its
graph: the same atom pairs and cell shifts are neighbours. :func:`evaluate` builds
the neighbour lists once with vesin and, for each operation, recomputes only the
pair vectors ``d' = x'_j - x'_i + S cell'`` in torch, so autograd reaches positions
and strain directly. The rotated copies go through the model a chunk at a time
(:func:`chunk_size`: at most ``batch_size`` copies and about :data:`CHUNK_ATOMS`
atoms per call), and :func:`evaluate_chunks` hands each chunk over before the next is
built, so averaging can run in O(chunk x atoms) memory. All returned outputs are in
the *rotated* frame; the back-transformation lives in :mod:`ase_symdiag.o3.transforms`.

The inputs a model requests (masses, charges, velocities, ...) are read and turned
with each operation by :mod:`ase_symdiag.backends.metatomic.inputs`.

Units: energy eV, forces eV/Å, stress eV/Å^3 (``dE/d(strain) / V``, ASE's sign).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ase_symdiag.errors import ModelEvaluationError, StructureError, UsageError
from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.backends.metatomic.inputs import input_arrays, input_tensormap, rotated_inputs
from ase_symdiag.backends.samples import Predictions, check_finite, join_chunks  # noqa: F401 (Predictions re-exported)
from ase_symdiag.backends.strain import apply_strain, identity_strain, pair_vectors, stress_from_strain_gradient
from ase_symdiag.structures import Structure


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


def _per_pair(block, n_systems: int, name: str) -> torch.Tensor:
    """Per-pair block values -> (n_systems, n_pairs, width), pairs of each system in
    the order of their labels (first atom, second atom, cell shift), the same in every
    rotated copy (they share one neighbour list)."""
    values = block.values.reshape(block.values.shape[0], -1)
    labels = block.samples.values.to(torch.long)
    order = np.lexsort(labels.cpu().numpy().T[::-1])  # by system, then the pair's labels
    counts = torch.bincount(labels[:, 0], minlength=n_systems)
    if n_systems == 0 or bool((counts != counts[0]).any()):
        raise ModelEvaluationError(f"feature output '{name}': rotated copies have different numbers of pairs")
    return values[torch.as_tensor(order, device=values.device)].reshape(n_systems, int(counts[0]), -1)


#: atoms per model call (copies x atoms). 512 measured fastest for the shipped PET at
#: 108 atoms on one CPU thread (84 operations: 5.3 s at 512, 6.3 s at 1024, 5.8 s at
#: 216, 8.9 s at one copy per call) and level with 1024 for the Morse model
#: (``bench/chunk_size.py``, docs/production_scale.md)
CHUNK_ATOMS = 512


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; no-op elsewhere).

    glibc raises its mmap threshold after large blocks are freed, so the next chunk's
    tensors of the same size come from the heap and the freed ones stay resident:
    without this, peak RSS after a few chunks is about twice one chunk's. Called
    between the one-copy chunks of structures of at least :data:`CHUNK_ATOMS` atoms
    (an 864-atom cell included), not between the batched chunks of small cells: the
    released pages are faulted in again by the next chunk, which cost 28 % of the
    time of a 24-operation step of the shipped PET at 864 atoms and 5-70 % at 108
    atoms (docs/production_scale.md)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def atom_budget(chunk_atoms: Optional[int] = None) -> int:
    """Atoms per model call: ``chunk_atoms``, or :data:`CHUNK_ATOMS` when ``None``."""
    return CHUNK_ATOMS if chunk_atoms is None else int(chunk_atoms)


def chunk_size(n_atoms: int, n_ops: int, batch_size: Optional[int] = 16, chunk_atoms: Optional[int] = None) -> int:
    """Copies per model call: at most ``min(batch_size, n_ops, max(1, chunk_atoms // n_atoms))``,
    evened out so that every chunk has the same size (up to one less for the last).

    ``batch_size`` caps the chunk (``None``: no cap), ``chunk_atoms`` (default
    :data:`CHUNK_ATOMS`) bounds the atoms in one call, so a 32-atom cell runs 16
    copies per call and a 10,000-atom one a single copy.
    """
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    size = max(1, atom_budget(chunk_atoms) // max(1, n_atoms))
    if batch_size is not None:
        size = min(size, int(batch_size))
    size = max(1, min(size, n_ops))
    # equal chunks (84 operations by 16 -> 6 x 14, not 5 x 16 + 4): TorchScript
    # specialises on input shapes, and a last, smaller chunk costs a re-optimisation
    n_chunks = -(-n_ops // size)
    return -(-n_ops // n_chunks)


def _predictions(arrays: Mapping[str, np.ndarray], features: Sequence[str], *, label: str, source: str) -> Predictions:
    """Chunk arrays (names as :func:`evaluate_chunks` yields them) as checked :class:`Predictions`."""
    predictions = Predictions(
        energy=arrays["energy"],
        forces=arrays.get("forces"),
        stress=arrays.get("stress"),
        energies=arrays.get("energies"),
        direct_forces=arrays.get("direct_forces"),
        direct_stress=arrays.get("direct_stress"),
        features={name: arrays["feature:" + name] for name in features} or None,
        energy_uncertainty=arrays.get("energy_uncertainty"),
    )
    return check_finite(predictions, label=label, source=source)


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
    batch_size: Optional[int] = 16,
    chunk_atoms: Optional[int] = None,
    graphs: Optional[List[_Graph]] = None,
    progress: Optional[Callable[[int], None]] = None,
    inputs: Optional[Mapping[str, np.ndarray]] = None,
    uncertainty: bool = False,
) -> Predictions:
    """Evaluate ``structure`` rotated by each of ``rotations`` ((K, 3, 3), default identity).

    ``forces``/``stress``: conservative, by autograd (stress only for fully periodic
    structures). ``energies``: per-atom energies (if the model has them). ``direct``:
    the model's non-conservative forces/stress heads (if it has them). ``features``:
    names of per-atom feature outputs, returned without any transformation.
    ``progress`` is called with the number of operations done after each chunk.
    ``inputs``: the arrays of the inputs the model requests (:func:`input_arrays`;
    default: those of a bare structure), turned with each operation where they are
    vectors. ``uncertainty``: also the model's ``energy_uncertainty`` (if it has one).
    Copies go through the model :func:`chunk_size` at a time (``batch_size`` caps it,
    ``chunk_atoms`` bounds copies x atoms). Non-finite outputs raise
    :class:`ModelEvaluationError` naming the structure.
    """
    joined = join_chunks(evaluate_chunks(
        handle, structure, rotations, forces=forces, stress=stress, energies=energies, direct=direct,
        features=features, batch_size=batch_size, chunk_atoms=chunk_atoms, graphs=graphs, progress=progress,
        inputs=inputs, uncertainty=uncertainty,
    ))
    return _predictions(joined, features, label=structure.label, source=handle.source)


def evaluate_chunks(
    handle: ModelHandle,
    structure: Structure,
    rotations: Optional[np.ndarray] = None,
    *,
    forces: bool = True,
    stress: bool = True,
    energies: bool = False,
    direct: bool = False,
    features: Sequence[str] = (),
    batch_size: Optional[int] = 16,
    chunk_atoms: Optional[int] = None,
    graphs: Optional[List[_Graph]] = None,
    progress: Optional[Callable[[int], None]] = None,
    inputs: Optional[Mapping[str, np.ndarray]] = None,
    uncertainty: bool = False,
) -> Iterator[Tuple[int, int, Dict[str, np.ndarray]]]:
    """Like :func:`evaluate`, one chunk of operations at a time: yields
    ``(start, stop, {name: (stop - start, ...) float64 array})`` with the names of
    :func:`evaluate`'s chunks (``energy``, ``forces``, ``stress``, ``energies``,
    ``direct_forces``, ``direct_stress``, ``energy_uncertainty``, ``feature:NAME``).
    Nothing of a chunk is kept after it is yielded, so a consumer that accumulates
    holds O(chunk x atoms). Every chunk is checked for non-finite values first."""
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, System

    handle.check_types(structure.numbers, structure.label)
    if rotations is None:
        rotations = np.eye(3)[None]
    n_ops = len(rotations)
    n_atoms = len(structure)
    step = chunk_size(n_atoms, n_ops, batch_size, chunk_atoms)
    budget = atom_budget(chunk_atoms)
    stress = stress and structure.periodic
    energies = energies and handle.per_atom_energy
    want_direct_forces = direct and handle.has_direct_forces
    want_direct_stress = direct and handle.has_direct_stress and structure.periodic
    need_grad = forces or stress
    want_uncertainty = uncertainty and handle.has_uncertainty
    if handle.requested_inputs:
        if inputs is None:
            inputs = input_arrays(handle, numbers=structure.numbers)
        missing = sorted(set(handle.requested_inputs) - set(inputs))
        if missing:
            raise StructureError(f"{structure.label or 'structure'}: the model requests the inputs {missing}")
        inputs = {name: inputs[name] for name in handle.requested_inputs}

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
    if want_uncertainty:
        requested[handle.uncertainty_key] = ModelOutput(unit="eV", sample_kind="system")
    declared = handle.outputs if features else {}
    for name in features:  # per atom, or per pair (metatrain's edge features)
        kind = getattr(declared.get(name), "sample_kind", "atom")
        requested[name] = ModelOutput(sample_kind="atom_pair" if kind == "atom_pair" else "atom")
    options = ModelEvaluationOptions(length_unit="angstrom", outputs=requested)

    types, base_positions, base_cell, pbc = _tensors(handle, structure)
    rot = torch.tensor(np.asarray(rotations), dtype=handle.dtype, device=handle.device)
    volume = structure.volume

    for start in range(0, n_ops, step):
        stop = min(start + step, n_ops)
        chunk: Dict[str, np.ndarray] = {}

        def keep(name: str, value: torch.Tensor) -> None:
            chunk[name] = value.detach().to("cpu", torch.float64).numpy()

        # one batched leaf per quantity: (B, N, 3) positions and (B, 3, 3) strains
        positions = (base_positions.unsqueeze(0) @ rot[start:stop].transpose(1, 2)).detach()
        cell = (base_cell.unsqueeze(0) @ rot[start:stop].transpose(1, 2)).detach()
        if forces:
            positions.requires_grad_(True)
        leaf_positions = positions
        if stress:
            strain = identity_strain(stop - start, handle.dtype, handle.device)
            positions, cell = apply_strain(positions, cell, strain)
        vectors = [pair_vectors(positions, graph.first, graph.second, graph.shifts, cell) for graph in graphs]
        turned = rotated_inputs(handle, inputs, rot[start:stop]) if inputs else {}
        systems = []
        for b in range(stop - start):
            system = System(types, positions[b], cell[b], pbc)
            for graph, graph_vectors in zip(graphs, vectors):
                system.add_neighbor_list(graph.options, _neighbor_block(graph, graph_vectors[b]))
            for name, values in turned.items():
                system.add_data(name, input_tensormap(handle, name, values[b]))
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
                keep("stress", stress_from_strain_gradient(grads[-1], torch.tensor(volume, dtype=torch.float64), False))
        if want_direct_forces:
            keep("direct_forces", _per_system(outputs[handle.nc_forces_key].block(), n_batch, n_atoms, 3))
        if want_direct_stress:
            block = outputs[handle.nc_stress_key].block()
            order = block.samples.values[:, 0].to(torch.long)
            values = torch.zeros(n_batch, 3, 3, dtype=block.values.dtype, device=handle.device)
            values[order] = block.values.reshape(-1, 3, 3)
            keep("direct_stress", values)
        if want_uncertainty:
            block = outputs[handle.uncertainty_key].block()
            order = block.samples.values[:, 0].to(torch.long)
            values = torch.zeros(n_batch, dtype=block.values.dtype, device=handle.device)
            values[order] = block.values.reshape(n_batch, -1)[:, 0]
            keep("energy_uncertainty", values)
        for name in features:
            block = outputs[name].block()
            if block.samples.names[:2] == ["system", "atom"]:
                keep("feature:" + name, _per_system(block, n_batch, n_atoms, block.values[0].numel()))
            else:
                keep("feature:" + name, _per_pair(block, n_batch, name))
        # drop this chunk's graph and copies before the next one is built
        del outputs, systems, vectors, positions, cell, leaf_positions, energy_block, total, turned
        if n_atoms >= budget and stop < n_ops:  # one copy per chunk: a large structure
            release_memory()
        if progress is not None:
            progress(n_batch)
        _predictions(chunk, features, label=structure.label, source=handle.source)  # raises on NaN/inf
        yield start, stop, chunk


def _zero_if_none(grad: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad
