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

from ase_symdiag.backends.metatomic.blocks import atom_samples, selection_mask, single_block_map


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
            samples = atom_samples(systems, device)
        else:
            samples = Labels(["system"], torch.arange(len(systems), device=device).reshape(-1, 1))
        block = TensorBlock(
            values=values,
            samples=samples,
            components=[],
            properties=Labels(["energy"], torch.tensor([[0]], device=device)),
        )
        results["energy"] = single_block_map(block, device)
        return results


class CorrectedForces(torch.nn.Module):
    """Adds corrected direct outputs to an inner metatomic module's energy.

    ``non_conservative_force``: ``-dE/dx`` of the inner energy (recomputed by autograd
    on a detached copy of the system, whose neighbour vectors are rebuilt from the
    engine's pairs and cell shifts), with the net force removed (exactly zero total
    force) and, for non-periodic systems, the net torque about the centroid removed
    (exactly zero total torque: angular momentum is conserved in MD).
    ``non_conservative_stress``: ``(1/V) dE/d(strain)``, symmetrised. Engines use them
    with their non-conservative option (LAMMPS: ``pair_style metatomic ...
    non_conservative on``); ``energy`` is passed through unchanged.
    """

    def __init__(self, inner: torch.nn.Module, neighbor_lists: List[NeighborListOptions], net_torque: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self._neighbor_lists = neighbor_lists
        self.net_torque = bool(net_torque)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self._neighbor_lists

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if len(systems) == 0:
            return results
        if "energy" in outputs:
            energy_request: Dict[str, ModelOutput] = {"energy": outputs["energy"]}
            results["energy"] = self.inner(systems, energy_request, selected_atoms)["energy"]
        want_forces = "non_conservative_force" in outputs
        want_stress = "non_conservative_stress" in outputs
        if not (want_forces or want_stress):
            return results
        device = systems[0].positions.device
        forces: List[torch.Tensor] = []
        stresses: List[torch.Tensor] = []
        for system in systems:
            positions = system.positions.detach().requires_grad_(True)
            strain = torch.eye(3, dtype=positions.dtype, device=device).requires_grad_(True)
            strained = positions @ strain
            cell = system.cell.detach() @ strain
            copy = System(system.types, strained, cell, system.pbc)
            for options in self._neighbor_lists:
                block = system.get_neighbor_list(options)
                samples = block.samples.values
                first = samples[:, 0].to(torch.long)
                second = samples[:, 1].to(torch.long)
                shifts = samples[:, 2:5].to(positions.dtype)
                vectors = strained[second] - strained[first] + shifts @ cell
                copy.add_neighbor_list(
                    options, TensorBlock(vectors.reshape(-1, 3, 1), block.samples, block.components, block.properties)
                )
            request: Dict[str, ModelOutput] = {"energy": ModelOutput(unit="", sample_kind="system")}
            energy = self.inner([copy], request, None)["energy"].block().values.sum()
            grads = torch.autograd.grad([energy], [positions, strain])
            grad_positions = grads[0]
            grad_strain = grads[1]
            if want_forces:
                assert grad_positions is not None
                force = -grad_positions
                force = force - force.mean(dim=0, keepdim=True)
                if self.net_torque and not bool(system.pbc.any()) and force.shape[0] > 1:
                    r = positions.detach() - positions.detach().mean(dim=0, keepdim=True)
                    torque = torch.linalg.cross(r, force).sum(dim=0)
                    inertia = (r * r).sum() * torch.eye(3, dtype=r.dtype, device=device) - r.T @ r
                    omega = torch.linalg.lstsq(inertia, torque.unsqueeze(1)).solution.squeeze(1)
                    force = force - torch.linalg.cross(omega.unsqueeze(0).expand_as(r), r)
                forces.append(force.detach())
            if want_stress:
                assert grad_strain is not None
                volume = torch.abs(torch.linalg.det(system.cell.detach()))
                stress = grad_strain / volume
                stresses.append((0.5 * (stress + stress.T)).detach())

        if want_forces:
            samples = atom_samples(systems, device)
            keep = selection_mask(samples, selected_atoms)
            block = TensorBlock(
                values=torch.cat(forces)[keep].reshape(-1, 3, 1),
                samples=Labels(["system", "atom"], samples.values[keep]),
                components=[Labels(["xyz"], torch.arange(3, device=device).reshape(-1, 1))],
                properties=Labels(["non_conservative_force"], torch.tensor([[0]], device=device)),
            )
            results["non_conservative_force"] = single_block_map(block, device)
        if want_stress:
            block = TensorBlock(
                values=torch.stack(stresses).reshape(-1, 3, 3, 1),
                samples=Labels(["system"], torch.arange(len(systems), device=device).reshape(-1, 1)),
                components=[
                    Labels(["xyz_1"], torch.arange(3, device=device).reshape(-1, 1)),
                    Labels(["xyz_2"], torch.arange(3, device=device).reshape(-1, 1)),
                ],
                properties=Labels(["non_conservative_stress"], torch.tensor([[0]], device=device)),
            )
            results["non_conservative_stress"] = single_block_map(block, device)
        return results


def export_corrected(model, path: Optional[str] = None, *, quadrature=None, net_torque: bool = True, batch_size: int = 16):
    """Export ``model`` with corrected direct outputs (see :class:`CorrectedForces`),
    optionally averaged over ``quadrature`` first (then the energy is the symmetrized
    one and the corrected forces are its gradients)."""

    base = export_symmetrized(model, quadrature, batch_size=batch_size) if quadrature is not None else None
    from ase_symdiag.backends.metatomic.model import ModelHandle

    handle = ModelHandle.load(base if base is not None else model)
    inner_model = handle.model
    capabilities = inner_model.capabilities()
    module = CorrectedForces(inner_model.module, list(inner_model.requested_neighbor_lists()), net_torque=net_torque).eval()
    outputs = {
        "energy": capabilities.outputs[handle.energy_key],
        "non_conservative_force": ModelOutput(unit="eV/Angstrom", sample_kind="atom"),
        "non_conservative_stress": ModelOutput(unit="eV/Angstrom^3", sample_kind="system"),
    }
    return _wrap(
        module, inner_model, outputs, path,
        name_suffix="with net-force/torque-free direct forces",
        description=(
            "Direct forces = -dE/dx with zero net force and (finite systems) zero net torque, "
            "symmetric direct stress; by ase-symdiag."
        ),
    )


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

    ``quadrature`` is anything :func:`ase_symdiag.metrics.symmetrize.resolve_quadrature`
    accepts. The exported model has one output, ``energy`` (per-atom capable if the
    inner model is); direct force/stress heads are dropped (engines get forces and
    stress from the averaged energy, which are the averaged back-rotated ones).
    """
    import numpy as np

    from ase_symdiag.errors import ModelError
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.metrics.symmetrize import resolve_quadrature

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
    return _wrap(
        module, inner_model, {"energy": energy_output}, path,
        name_suffix=f"symmetrized over {q.name}",
        description=(
            f"Energy averaged over the O(3) quadrature '{q.name}' ({q.size} operations, "
            f"exact to degree {q.degree}) by ase-symdiag."
        ),
    )


def _wrap(module, inner_model, outputs: dict, path, *, name_suffix: str, description: str):
    """An AtomisticModel around ``module`` with ``inner_model``'s capabilities but
    ``outputs``, metadata extended by ``name_suffix``/``description``; saved
    atomically to ``path`` if given."""
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata

    from ase_symdiag.report import atomic_write

    capabilities = inner_model.capabilities()
    new_capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=list(capabilities.atomic_types),
        interaction_range=capabilities.interaction_range,
        length_unit=capabilities.length_unit,
        supported_devices=list(capabilities.supported_devices),
        dtype=capabilities.dtype,
    )
    inner_metadata = inner_model.metadata()
    metadata = ModelMetadata(
        name=f"{inner_metadata.name or 'model'} {name_suffix}",
        description=f"{description} {inner_metadata.description}",
        authors=list(inner_metadata.authors),
        references=inner_metadata.references,
    )
    exported = AtomisticModel(module, metadata, new_capabilities)
    if path is not None:
        atomic_write(str(path), exported.save)
    return exported
