"""Export a model with corrected direct outputs (LAMMPS ``non_conservative on``).

:class:`CorrectedForces` gives ``non_conservative_force`` = ``-dE/dx`` with the net
force and, for finite systems, the net torque removed, and a symmetric
``non_conservative_stress`` (docs/methods.md §6), declared in the inner model's energy
unit over its length unit (and its cube). Both corrections are global: the module
refuses a strict ``selected_atoms`` subset (LAMMPS with several MPI ranks).
"""

from typing import Dict, Final, List, Optional

import torch
from metatensor.torch import Labels, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System

from ase_symdiag.backends.metatomic.blocks import force_map, stress_map
from ase_symdiag.backends.metatomic.carried import system_copy
from ase_symdiag.backends.metatomic.model import NC_FORCE, NC_STRESS
from ase_symdiag.backends.rigid import remove_net_force, remove_net_torque
from ase_symdiag.backends.strain import apply_strain, identity_strain, pair_vectors, stress_from_strain_gradient
from ase_symdiag.backends.metatomic.export import (
    is_strict_subset, system_selection, wrap_exported, direct_outputs, export_symmetrized,
)


def _corrected_domain_message() -> str:
    return (
        "the corrected export removes the net force (and torque) over the whole system, which needs every "
        "atom, but selected_atoms is a strict subset (LAMMPS with several MPI ranks passes local atoms plus "
        "ghosts): each rank would remove a different, wrong mean. Run the corrected export on a single MPI "
        "rank, or use the symmetrized export (export_symmetrized / ase-symdiag symmetrize --export, without "
        "--corrected) with 'non_conservative off', which is exact under domain decomposition"
    )


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

    The net force and torque are global: with ``selected_atoms`` a strict subset of a
    system's atoms (LAMMPS with several MPI ranks) the direct outputs refuse with
    the message of :func:`_corrected_domain_message` rather than remove a per-domain mean.
    """

    #: metatomic's output names, as TorchScript constants
    nc_force: Final[str] = NC_FORCE
    nc_stress: Final[str] = NC_STRESS

    _neighbor_lists: List[NeighborListOptions]
    _inputs: Dict[str, ModelOutput]
    _input_names: List[str]
    _no_pseudovectors: List[str]

    def __init__(
        self,
        inner: torch.nn.Module,
        neighbor_lists: List[NeighborListOptions],
        net_torque: bool = True,
        inputs: Optional[Dict[str, ModelOutput]] = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self._neighbor_lists = neighbor_lists
        self.net_torque = bool(net_torque)
        # the inner model's requested inputs: engines provide them, the strained copy passes them on
        self._inputs = {} if inputs is None else dict(inputs)
        self._input_names = list(self._inputs.keys())
        self._no_pseudovectors = []

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self._neighbor_lists

    def requested_inputs(self) -> Dict[str, ModelOutput]:
        return self._inputs

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
        want_forces = self.nc_force in outputs
        want_stress = self.nc_stress in outputs
        if not (want_forces or want_stress):
            return results
        for s, system in enumerate(systems):
            if is_strict_subset(system_selection(selected_atoms, s, len(system)), len(system)):
                raise ValueError(_corrected_domain_message())
        device = systems[0].positions.device
        forces: List[torch.Tensor] = []
        stresses: List[torch.Tensor] = []
        for system in systems:
            positions = system.positions.detach().requires_grad_(True)
            strain = identity_strain(1, positions.dtype, device)[0]
            strained, cell = apply_strain(positions, system.cell.detach(), strain)
            vectors: List[torch.Tensor] = []
            for options in self._neighbor_lists:
                samples = system.get_neighbor_list(options).samples.values
                first = samples[:, 0].to(torch.long)
                second = samples[:, 1].to(torch.long)
                vectors.append(pair_vectors(strained, first, second, samples[:, 2:5].to(positions.dtype), cell))
            copy = system_copy(
                system, strained, cell, self._neighbor_lists, vectors, self._input_names, None, self._no_pseudovectors
            )
            request: Dict[str, ModelOutput] = {"energy": ModelOutput(unit="", sample_kind="system")}
            energy = self.inner([copy], request, None)["energy"].block().values.sum()
            grads = torch.autograd.grad([energy], [positions, strain])
            grad_positions = grads[0]
            grad_strain = grads[1]
            if want_forces:
                assert grad_positions is not None
                weights = torch.ones(len(system), dtype=positions.dtype, device=device)
                one_system = torch.zeros(len(system), dtype=torch.long, device=device)
                force = remove_net_force(-grad_positions, weights, one_system, 1)
                if self.net_torque and not bool(system.pbc.any()):
                    force = remove_net_torque(force, positions.detach(), weights, one_system, 1)
                forces.append(force.detach())
            if want_stress:
                assert grad_strain is not None
                volume = torch.abs(torch.linalg.det(system.cell.detach()))
                stresses.append(stress_from_strain_gradient(grad_strain, volume, True).detach())

        if want_forces:
            results[self.nc_force] = force_map(systems, torch.cat(forces), selected_atoms, self.nc_force)
        if want_stress:
            results[self.nc_stress] = stress_map(torch.stack(stresses), self.nc_stress)
        return results


def export_corrected(
    model,
    path: Optional[str] = None,
    *,
    quadrature=None,
    net_torque: bool = True,
    batch_size: int = 16,
    dtype: Optional[str] = None,
):
    """Export ``model`` (path, AtomisticModel or ModelHandle) with corrected direct
    outputs (see :class:`CorrectedForces`), optionally averaged over ``quadrature``
    first (then the energy is the symmetrized one and the corrected forces are its
    gradients). The direct outputs are in the model's energy unit over its length unit
    (and its cube); the export runs in and declares ``dtype`` (default: the handle's or
    the model's own). Saved to ``path`` only once the saved file loads back and runs."""
    from ase_symdiag.backends.metatomic.exporting import export_handle

    handle = export_handle(model, dtype)
    if quadrature is not None:
        handle = export_handle(export_symmetrized(handle, quadrature=quadrature, batch_size=batch_size), None)
    inner_model = handle.model
    capabilities = inner_model.capabilities()
    module = CorrectedForces(
        inner_model.module, list(inner_model.requested_neighbor_lists()), net_torque=net_torque,
        inputs=dict(handle.requested_inputs),
    ).eval()
    outputs = {"energy": capabilities.outputs[handle.energy_key]}
    outputs.update(direct_outputs(handle))
    return wrap_exported(
        module, handle, outputs, path,
        name_suffix="with net-force/torque-free direct forces",
        description=(
            "Direct forces = -dE/dx with zero net force and (finite systems) zero net torque, "
            "symmetric direct stress; by ase-symdiag."
        ),
    )
