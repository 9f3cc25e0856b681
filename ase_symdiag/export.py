"""Export a symmetrized model as a metatomic TorchScript file (LAMMPS, i-PI, ASE).

:class:`SymmetrizedEnergy` wraps the inner module of any metatomic model and
averages its energy over a fixed O(3) quadrature: each system is rotated (positions,
cell and the engine's neighbour-list vectors, ``d' = d R^T``; the pairs are
unchanged), the copies go through the inner module in batches, and the energies are
combined with the quadrature weights. Engines differentiate the averaged energy, so
the forces and stress they get are exactly the back-rotated averages
``sum_k w_k F(R_k x) R_k`` and ``sum_k w_k R_k^T S(R_k x) R_k``.

Why not ``metatomic.torch.o3.SymmetrizedModel``: it averages over its own Lebedev
grid only, while any quadrature can be used here, e.g. the 24-operation T_h group for
degree 2 or the 120-operation I_h group for degree 5 (its grid needs 36-48 and 168).
"""

from typing import Dict, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System


class SymmetrizedEnergy(torch.nn.Module):
    """Quadrature average of an inner metatomic module's energy (system or per-atom)."""

    def __init__(
        self,
        inner: torch.nn.Module,
        rotations: torch.Tensor,
        weights: torch.Tensor,
        neighbor_lists: List[NeighborListOptions],
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("rotations", rotations)
        self.register_buffer("weights", weights)
        self._neighbor_lists = neighbor_lists
        self.batch_size = int(batch_size)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self._neighbor_lists

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if "energy" not in outputs or len(systems) == 0:
            return results
        per_atom = outputs["energy"].sample_kind == "atom"
        device = systems[0].positions.device
        dtype = systems[0].positions.dtype
        rotations = self.rotations.to(device=device, dtype=dtype)
        weights = self.weights.to(device=device, dtype=dtype)
        n_ops = rotations.shape[0]
        inner_outputs: Dict[str, ModelOutput] = {"energy": outputs["energy"]}
        totals: List[torch.Tensor] = []
        for system in systems:
            totals.append(torch.zeros(len(system) if per_atom else 1, dtype=dtype, device=device))
        for start in range(0, n_ops, self.batch_size):
            stop = min(start + self.batch_size, n_ops)
            n_batch = stop - start
            rotated: List[System] = []
            for system in systems:
                for k in range(start, stop):
                    rotation = rotations[k]
                    copy = System(
                        system.types,
                        system.positions @ rotation.T,
                        system.cell @ rotation.T,
                        system.pbc,
                    )
                    for options in self._neighbor_lists:
                        block = system.get_neighbor_list(options)
                        values = (block.values.squeeze(-1) @ rotation.T).unsqueeze(-1)
                        copy.add_neighbor_list(
                            options,
                            TensorBlock(values, block.samples, block.components, block.properties),
                        )
                    rotated.append(copy)
            energy = self.inner(rotated, inner_outputs, _repeat_selection(selected_atoms, n_batch)).values()[0].block()
            index = energy.samples.column("system").to(torch.long)
            owner = torch.div(index, n_batch, rounding_mode="floor")
            weight = weights[start + index - owner * n_batch]
            contribution = weight * energy.values.reshape(-1)
            for s in range(len(systems)):
                mask = owner == s
                if per_atom:
                    atoms = energy.samples.column("atom").to(torch.long)[mask]
                    totals[s] = totals[s].index_add(0, atoms, contribution[mask])
                else:
                    totals[s] = totals[s] + contribution[mask].sum()

        values = torch.cat(totals).reshape(-1, 1)
        if per_atom:
            parts: List[torch.Tensor] = []
            for s, system in enumerate(systems):
                atoms = torch.arange(len(system), device=device)
                parts.append(torch.stack([torch.full_like(atoms, s), atoms], dim=1))
            samples = Labels(["system", "atom"], torch.cat(parts))
        else:
            samples = Labels(["system"], torch.arange(len(systems), device=device).reshape(-1, 1))
        block = TensorBlock(
            values=values,
            samples=samples,
            components=[],
            properties=Labels(["energy"], torch.tensor([[0]], device=device)),
        )
        results["energy"] = TensorMap(Labels("_", torch.tensor([[0]], device=device)), [block])
        return results


def _repeat_selection(selected_atoms: Optional[Labels], n_copies: int) -> Optional[Labels]:
    """The engine's selection of (system s, atom) for copies s * n_copies + k, k < n_copies."""
    if selected_atoms is None:
        return None
    values = selected_atoms.values
    copies = torch.arange(n_copies, dtype=values.dtype, device=values.device)
    system = (values[:, 0].unsqueeze(1) * n_copies + copies.unsqueeze(0)).reshape(-1)
    atom = values[:, 1].unsqueeze(1).expand(-1, n_copies).reshape(-1)
    return Labels(["system", "atom"], torch.stack([system, atom], dim=1))


def export_symmetrized(model, quadrature, path: Optional[str] = None, *, batch_size: int = 16):
    """Wrap ``model`` (path or AtomisticModel) with a quadrature average; save to ``path``.

    ``quadrature`` is anything :func:`ase_symdiag.symmetrize.resolve_quadrature`
    accepts. The exported model has one output, ``energy`` (per-atom capable if the
    inner model is); direct force/stress heads are dropped (engines get forces and
    stress from the averaged energy, which are the averaged back-rotated ones).
    """
    import numpy as np
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata

    from .errors import ModelError
    from .metatomic_model import ModelHandle
    from .symmetrize import resolve_quadrature

    handle = ModelHandle.load(model)
    q = resolve_quadrature(quadrature)
    if q is None:
        raise ValueError("export_symmetrized needs a quadrature")
    inner_model = handle.model
    capabilities = inner_model.capabilities()
    energy_output = capabilities.outputs[handle.energy_key]
    if handle.energy_key != "energy":
        raise ModelError(f"{handle.source}: only models with a plain 'energy' output can be exported")
    dtype = torch.float64 if capabilities.dtype == "float64" else torch.float32
    module = SymmetrizedEnergy(
        inner_model.module,
        torch.tensor(np.asarray(q.rotations), dtype=dtype),
        torch.tensor(np.asarray(q.weights), dtype=dtype),
        list(inner_model.requested_neighbor_lists()),
        batch_size=batch_size,
    ).eval()
    new_capabilities = ModelCapabilities(
        outputs={"energy": energy_output},
        atomic_types=list(capabilities.atomic_types),
        interaction_range=capabilities.interaction_range,
        length_unit=capabilities.length_unit,
        supported_devices=list(capabilities.supported_devices),
        dtype=capabilities.dtype,
    )
    inner_metadata = inner_model.metadata()
    metadata = ModelMetadata(
        name=f"{inner_metadata.name or 'model'} symmetrized over {q.name}",
        description=(
            f"Energy averaged over the O(3) quadrature '{q.name}' ({q.size} operations, "
            f"exact to degree {q.degree}) by ase-symdiag. {inner_metadata.description}"
        ),
        authors=list(inner_metadata.authors),
        references=inner_metadata.references,
    )
    exported = AtomisticModel(module, metadata, new_capabilities)
    if path is not None:
        exported.save(str(path))
    return exported
