"""Outputs other than the energy that a symmetrized export carries over, the
inputs it turns with each rotated copy, and the copies of a system that every
export (symmetrized and corrected) gives its inner model (:func:`system_copy`).

Averaging over a quadrature is defined for outputs whose values are scalars per
property (no ``components``): the model's ``energy_uncertainty`` and its learned
features (``feature``, ``mtt::features::*``, ``mtt::aux::*_features``; metatomic
refuses new models that declare the deprecated ``features``, so it is not re-exported).
Their quadrature average ``sum_k w_k f(R_k x)`` is the invariant part of each
property (its lambda = 0 projection, exact when the quadrature integrates the
property's angular content). Values are averaged without gradients: engines
differentiate the energy only. Outputs with components (vectors, tensors) would need
a back-rotation and are not carried; the export refuses them at run time.

TorchScript-compatible (used inside :class:`~ase_symdiag.backends.metatomic.export.SymmetrizedEnergy`
and :class:`~ase_symdiag.backends.metatomic.corrected.CorrectedForces`).
"""

from typing import List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import NeighborListOptions, System

#: exact output names carried over by averaging
CARRIED_NAMES = ("energy_uncertainty", "feature")
#: name prefixes of learned features carried over by averaging
CARRIED_PREFIXES = ("mtt::features::", "mtt::feature::")


def is_carried(name: str) -> bool:
    """Whether a symmetrized export averages and re-exports the inner output ``name``."""
    if name in CARRIED_NAMES or name.startswith(CARRIED_PREFIXES):
        return True
    return name.startswith("mtt::aux::") and name.endswith("_features")


class Accumulator:
    """Weighted per-block sums of one output of one system over rotated copies.

    ``values[j]``: (N, P) per-atom or (1, P) per-system running sum of block ``j``;
    ``present[j]``: (N,) or (1,) which samples appeared (blocks keyed by atom type
    hold a subset of the atoms)."""

    def __init__(self, name: str, n_atoms: int, per_atom: bool) -> None:
        self.name = name
        self.n_rows = n_atoms if per_atom else 1
        self.per_atom = per_atom
        self.values: List[torch.Tensor] = []
        self.present: List[torch.Tensor] = []
        self.properties: List[Labels] = []
        self.keys = Labels("_", torch.tensor([[0]]))

    def add(self, tensor_map: TensorMap, weights: torch.Tensor) -> None:
        """Add ``sum_copies weights[copy] * values`` of a chunk's output (``weights`` per copy)."""
        blocks = tensor_map.blocks()
        if len(self.values) == 0:
            self.keys = tensor_map.keys
            for block in blocks:
                n_properties = block.values.shape[-1]
                self.values.append(torch.zeros((self.n_rows, n_properties), dtype=weights.dtype, device=weights.device))
                self.present.append(torch.zeros(self.n_rows, dtype=torch.bool, device=weights.device))
                self.properties.append(block.properties)
        if len(blocks) != len(self.values):
            raise ValueError(f"output '{self.name}' changed its number of blocks between rotated copies")
        for j, block in enumerate(blocks):
            if len(block.components) != 0:
                raise ValueError(
                    f"output '{self.name}' has components (a vector or tensor): averaging it would need a back-rotation, "
                    "which a symmetrized export does not do"
                )
            copy = block.samples.column("system").to(torch.long)
            values = block.values.detach().to(weights.dtype) * weights[copy].unsqueeze(1)
            if self.per_atom:
                rows = block.samples.column("atom").to(torch.long)
            else:
                rows = torch.zeros_like(copy)
            self.values[j] = self.values[j].index_add(0, rows, values)
            self.present[j] = self.present[j].index_fill(0, rows, True)


def assemble(accumulators: List[Accumulator], dtype: torch.dtype) -> TensorMap:
    """One TensorMap from the accumulators of every system (system-major)."""
    first = accumulators[0]
    blocks: List[TensorBlock] = []
    for j in range(len(first.values)):
        values: List[torch.Tensor] = []
        samples: List[torch.Tensor] = []
        for s, accumulator in enumerate(accumulators):
            rows = torch.nonzero(accumulator.present[j]).reshape(-1)
            values.append(accumulator.values[j][rows].to(dtype))
            system = torch.full_like(rows, s)
            if first.per_atom:
                samples.append(torch.stack([system, rows], dim=1))
            else:
                samples.append(system.reshape(-1, 1))
        names = ["system", "atom"] if first.per_atom else ["system"]
        blocks.append(
            TensorBlock(
                values=torch.cat(values),
                samples=Labels(names, torch.cat(samples).to(torch.int32)),
                components=[],
                properties=first.properties[j],
            )
        )
    return TensorMap(first.keys, blocks)


def turned_input(tensor: TensorMap, rotation: torch.Tensor, pseudovector: bool) -> TensorMap:
    """A requested input (velocity, momentum, ...) in the frame of ``rotation``.

    Blocks with one ``xyz`` component (values (n, 3, p)) turn as vectors, ``v' = R v``
    (times ``det R`` for pseudo-vectors); blocks without components are unchanged;
    anything with more components is refused."""
    blocks: List[TensorBlock] = []
    for block in tensor.blocks():
        values = block.values
        if len(block.components) == 1 and values.shape[1] == 3:
            values = rotation.to(values.dtype).unsqueeze(0) @ values
            if pseudovector:
                values = values * torch.linalg.det(rotation).to(values.dtype)
        elif len(block.components) != 0:
            raise ValueError("a symmetrized export can only turn scalar and 3-vector inputs")
        blocks.append(TensorBlock(values, block.samples, block.components, block.properties))
    turned = TensorMap(tensor.keys, blocks)
    for key, value in tensor.info().items():
        turned.set_info(key, value)
    return turned


def system_copy(
    system: System,
    positions: torch.Tensor,
    cell: torch.Tensor,
    neighbor_lists: List[NeighborListOptions],
    vectors: List[torch.Tensor],
    inputs: List[str],
    rotation: Optional[torch.Tensor],
    pseudovectors: List[str],
) -> System:
    """A copy of the engine's ``system`` with new ``positions`` (N, 3) and ``cell``
    (3, 3), the engine's pairs of each of ``neighbor_lists`` with new ``vectors[i]``
    (n_pairs, 3), and the engine's requested ``inputs`` (masses, velocities, ...),
    turned by ``rotation`` (:func:`turned_input`; ``pseudovectors`` turn with
    ``det R``) or, without one, as they are."""
    copy = System(system.types, positions, cell, system.pbc)
    for i in range(len(neighbor_lists)):
        block = system.get_neighbor_list(neighbor_lists[i])
        copy.add_neighbor_list(
            neighbor_lists[i],
            TensorBlock(vectors[i].reshape(-1, 3, 1), block.samples, block.components, block.properties),
        )
    for name in inputs:
        data = system.get_data(name)
        if rotation is not None:
            data = turned_input(data, rotation, name in pseudovectors)
        copy.add_data(name, data)
    return copy
