"""Export a symmetrized model as a metatomic TorchScript file (LAMMPS, i-PI, ASE).

:class:`SymmetrizedEnergy` wraps the inner module of any metatomic model and
averages its energy over a fixed O(3) quadrature: each system is rotated (positions,
cell and the engine's neighbour-list vectors, ``d' = d R^T``; the pairs are
unchanged), the copies go through the inner module a chunk at a time, and the
energies are combined with the quadrature weights.

Memory: each chunk's derivatives with respect to the system's positions, cell and
neighbour vectors are taken as soon as the chunk is evaluated, accumulated, and the
chunk's graph is freed; the returned energy carries a first-order surrogate,
``E + <G_x, x - x.detach()> + <G_cell, cell - cell.detach()> + <G_d, d - d.detach()>``
(numerically equal to ``E``), whose gradient is exactly the accumulated one. Engines
that differentiate the energy (LAMMPS ``non_conservative off``, ASE, i-PI) thus get
the back-rotated averages ``sum_k w_k F(R_k x) R_k`` and
``sum_k w_k R_k^T S(R_k x) R_k`` with peak memory of one chunk (default: as many
copies as fit in :data:`~ase_symdiag.backends.metatomic.evaluation.CHUNK_ATOMS` atoms, one copy for
large systems), never of all operations. Second derivatives (Hessians) of the
exported energy are not available.

The same pass also gives ``non_conservative_force`` (``-dE/dx`` of the averaged
energy) and ``non_conservative_stress`` (``(1/V) dE/d(strain)``), declared when
exported with ``non_conservative=True`` (LAMMPS ``non_conservative on``,
``MetatomicCalculator(non_conservative=True)``, TorchSim). These are exact only when
the model sees the whole system: with ``selected_atoms`` a strict subset (LAMMPS with
several MPI ranks) they refuse; use the energy (``non_conservative off``) there,
which is exact under domain decomposition.

The inner model's ``energy_uncertainty`` and learned features are averaged in the
same pass (their invariant part, without gradients; see
:mod:`ase_symdiag.backends.metatomic.carried`); other outputs are not carried and
:func:`dropped_outputs` says why.

Why not ``metatomic.torch.o3.SymmetrizedModel``: it averages over its own Lebedev
grid only, while any quadrature can be used here, e.g. the 24-operation T_h group for
degree 2 or the 120-operation I_h group for degree 5 (its grid needs 36-48 and 168).
"""

from typing import Dict, Final, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System

from ase_symdiag.backends.metatomic.blocks import atom_samples, force_map, selection_mask, single_block_map, stress_map
from ase_symdiag.backends.metatomic.carried import Accumulator, assemble, is_carried, system_copy
from ase_symdiag.backends.metatomic.evaluation import CHUNK_ATOMS
from ase_symdiag.backends.metatomic.inputs import PSEUDOVECTOR_INPUTS
from ase_symdiag.backends.metatomic.model import NC_FORCE, NC_STRESS
from ase_symdiag.backends.strain import strain_gradient, stress_from_strain_gradient

#: atoms per inner call (copies x atoms): the calculator's budget
DEFAULT_CHUNK_ATOMS = CHUNK_ATOMS


def _domain_message() -> str:
    return (
        "this model's non_conservative_force/non_conservative_stress are -dE/dx and dE/d(strain) of an energy "
        "over the whole system it is given, but selected_atoms is a strict subset of the atoms (LAMMPS with "
        "several MPI ranks passes local atoms plus ghosts): the result would miss the energy of atoms owned "
        "by other ranks. Use 'pair_style metatomic ... non_conservative off' (forces from the energy, exact "
        "under domain decomposition) with a symmetrized export, or run on a single MPI rank"
    )





def system_selection(selected_atoms: Optional[Labels], system: int, n_atoms: int) -> Optional[torch.Tensor]:
    """Atom indices of ``system`` in ``selected_atoms`` (None: all atoms)."""
    if selected_atoms is None:
        return None
    values = selected_atoms.values
    return values[values[:, 0] == system][:, 1]


def is_strict_subset(selection: Optional[torch.Tensor], n_atoms: int) -> bool:
    if selection is None:
        return False
    return int(torch.unique(selection).shape[0]) < n_atoms


class SymmetrizedEnergy(torch.nn.Module):
    """Quadrature average of an inner metatomic module's energy (system or per-atom),
    evaluated chunk by chunk (see the module docstring), with optional direct
    outputs ``non_conservative_force``/``non_conservative_stress`` of the average."""

    #: metatomic's output names, as TorchScript constants
    nc_force: Final[str] = NC_FORCE
    nc_stress: Final[str] = NC_STRESS

    #: inner outputs averaged alongside the energy (see ase_symdiag.backends.metatomic.carried)
    carried: List[str]
    _neighbor_lists: List[NeighborListOptions]
    _inputs: Dict[str, ModelOutput]
    _input_names: List[str]
    _pseudovectors: List[str]

    def __init__(
        self,
        inner: torch.nn.Module,
        rotations: torch.Tensor,
        weights: torch.Tensor,
        neighbor_lists: List[NeighborListOptions],
        batch_size: int = 16,
        chunk_atoms: int = DEFAULT_CHUNK_ATOMS,
        carried: Optional[List[str]] = None,
        inputs: Optional[Dict[str, ModelOutput]] = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.carried = [] if carried is None else list(carried)
        # the inner model's requested inputs (engines provide them: AtomisticModel
        # collects requested_inputs from submodules); each copy gets them turned
        self._inputs = {} if inputs is None else dict(inputs)
        self._input_names = list(self._inputs.keys())
        self._pseudovectors = [name for name in self._inputs if name in PSEUDOVECTOR_INPUTS]
        self.register_buffer("rotations", rotations)
        self.register_buffer("weights", weights)
        self._neighbor_lists = neighbor_lists
        self.batch_size = int(batch_size)
        self.chunk_atoms = int(chunk_atoms)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self._neighbor_lists

    def requested_inputs(self) -> Dict[str, ModelOutput]:
        return self._inputs

    def chunk_size(self, n_atoms: int) -> int:
        """Copies per inner call: at most ``batch_size``, about ``chunk_atoms`` atoms."""
        n_ops = int(self.rotations.shape[0])
        size = max(1, min(self.chunk_atoms // max(1, n_atoms), self.batch_size, n_ops))
        n_chunks = (n_ops + size - 1) // size
        return (n_ops + n_chunks - 1) // n_chunks  # equal chunks: one TorchScript specialisation

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        want_energy = "energy" in outputs
        want_forces = self.nc_force in outputs
        want_stress = self.nc_stress in outputs
        extra: Dict[str, ModelOutput] = {}
        for name in self.carried:
            if name in outputs:
                extra[name] = outputs[name]
        if len(systems) == 0 or not (want_energy or want_forces or want_stress or len(extra) > 0):
            return results
        per_atom = want_energy and outputs["energy"].sample_kind == "atom"
        device = systems[0].positions.device
        if (want_forces or want_stress) and not torch.is_grad_enabled():
            raise ValueError("non_conservative outputs of a symmetrized export need autograd enabled")
        energies: List[torch.Tensor] = []
        forces: List[torch.Tensor] = []
        stresses: List[torch.Tensor] = []
        averaged: Dict[str, List[Accumulator]] = {}
        for name in extra.keys():
            empty: List[Accumulator] = []
            averaged[name] = empty
        for s, system in enumerate(systems):
            n_atoms = len(system)
            selection = system_selection(selected_atoms, s, n_atoms)
            if (want_forces or want_stress) and is_strict_subset(selection, n_atoms):
                raise ValueError(_domain_message())
            energy, force, stress, accumulators = self._average(
                system, selection, per_atom, want_forces, want_stress, extra
            )
            for accumulator in accumulators:
                averaged[accumulator.name].append(accumulator)
            energies.append(energy)
            if want_forces:
                forces.append(force)
            if want_stress:
                stresses.append(stress)

        if want_energy:
            if per_atom:
                samples = atom_samples(systems, device)
                keep = selection_mask(samples, selected_atoms)
                samples = Labels(["system", "atom"], samples.values[keep])
                values = torch.cat(energies)[keep]
            else:
                samples = Labels(["system"], torch.arange(len(systems), device=device).reshape(-1, 1))
                values = torch.cat(energies)
            block = TensorBlock(
                values=values.reshape(-1, 1),
                samples=samples,
                components=[],
                properties=Labels(["energy"], torch.tensor([[0]], device=device)),
            )
            results["energy"] = single_block_map(block, device)
        if want_forces:
            results[self.nc_force] = force_map(systems, torch.cat(forces), selected_atoms, self.nc_force)
        if want_stress:
            results[self.nc_stress] = stress_map(torch.stack(stresses), self.nc_stress)
        for name, accumulators in averaged.items():
            results[name] = assemble(accumulators, systems[0].positions.dtype)
        return results

    def _average(
        self,
        system: System,
        selection: Optional[torch.Tensor],
        per_atom: bool,
        want_forces: bool,
        want_stress: bool,
        extra: Dict[str, ModelOutput],
    ):
        """Averaged energy of one system (per-atom (N,) or (1,), with the gradient
        surrogate attached when the engine differentiates it), the direct
        forces (N, 3) / stress (3, 3) when asked (else empty tensors), and one
        :class:`Accumulator` per output of ``extra`` (averages of carried outputs)."""
        device = system.positions.device
        dtype = system.positions.dtype
        n_atoms = len(system)
        rotations = self.rotations.to(device=device, dtype=dtype)
        weights = self.weights.to(device=device, dtype=dtype)
        n_ops = int(rotations.shape[0])

        blocks: List[TensorBlock] = []
        engine_leaves: List[torch.Tensor] = [system.positions, system.cell]
        for options in self._neighbor_lists:
            block = system.get_neighbor_list(options)
            blocks.append(block)
            engine_leaves.append(block.values)
        engine_grad = False
        if torch.is_grad_enabled():
            for tensor in engine_leaves:
                if tensor.requires_grad:
                    engine_grad = True
        need_grad = engine_grad or want_forces or want_stress

        leaves: List[torch.Tensor] = []
        for tensor in engine_leaves:
            leaves.append(tensor.detach().requires_grad_(need_grad))
        gradients: List[torch.Tensor] = []
        for leaf in leaves:
            gradients.append(torch.zeros_like(leaf))

        inner_outputs: Dict[str, ModelOutput] = {
            "energy": ModelOutput(unit="", sample_kind="atom" if per_atom else "system")
        }
        accumulators: List[Accumulator] = []
        for name, output in extra.items():
            inner_outputs[name] = output
            accumulators.append(Accumulator(name, n_atoms, output.sample_kind == "atom"))
        total = torch.zeros(n_atoms if per_atom else 1, dtype=dtype, device=device)
        step = self.chunk_size(n_atoms)
        for start in range(0, n_ops, step):
            stop = min(start + step, n_ops)
            n_batch = stop - start
            chunk = rotations[start:stop].transpose(1, 2)
            positions = leaves[0].unsqueeze(0) @ chunk
            cells = leaves[1].unsqueeze(0) @ chunk
            vectors: List[torch.Tensor] = []
            for i in range(len(blocks)):
                vectors.append(leaves[2 + i].reshape(1, -1, 3) @ chunk)
            rotated: List[System] = []
            for k in range(n_batch):
                copy_vectors: List[torch.Tensor] = []
                for i in range(len(blocks)):
                    copy_vectors.append(vectors[i][k])
                rotated.append(
                    system_copy(
                        system, positions[k], cells[k], self._neighbor_lists, copy_vectors,
                        self._input_names, rotations[start + k], self._pseudovectors,
                    )
                )
            chunk_results = self.inner(rotated, inner_outputs, _repeat_selection(selection, n_batch))
            for accumulator in accumulators:
                accumulator.add(chunk_results[accumulator.name], weights[start:stop])
            energy = chunk_results["energy"].block()
            copy_index = energy.samples.column("system").to(torch.long)
            contribution = weights[start + copy_index] * energy.values.reshape(-1)
            if need_grad:
                grads = torch.autograd.grad([contribution.sum()], leaves, allow_unused=True)
                for i in range(len(leaves)):
                    grad = grads[i]
                    if grad is not None:
                        gradients[i] = gradients[i] + grad
            contribution = contribution.detach()
            if per_atom:
                atoms = energy.samples.column("atom").to(torch.long)
                total = total.index_add(0, atoms, contribution)
            else:
                total = total + contribution.sum()

        if engine_grad:
            surrogate = torch.zeros((), dtype=dtype, device=device)
            for i in range(len(leaves)):
                surrogate = surrogate + ((engine_leaves[i] - leaves[i].detach()) * gradients[i]).sum()
            if per_atom:
                first = torch.zeros(n_atoms, dtype=dtype, device=device)
                if selection is None:
                    first[0] = 1.0
                elif selection.shape[0] > 0:
                    first[selection[0].to(torch.long)] = 1.0
                total = total + first * surrogate
            else:
                total = total + surrogate

        force = torch.zeros(0, dtype=dtype, device=device)
        stress = torch.zeros(0, dtype=dtype, device=device)
        if want_forces or want_stress:
            # d/dx of E(x, cell, d(x, cell)) with d_ij = x_j - x_i + S cell
            grad_positions = gradients[0]
            for i in range(len(blocks)):
                samples = blocks[i].samples.values
                first_atom = samples[:, 0].to(torch.long)
                second_atom = samples[:, 1].to(torch.long)
                grad_vectors = gradients[2 + i].reshape(-1, 3)
                grad_positions = grad_positions.index_add(0, second_atom, grad_vectors)
                grad_positions = grad_positions.index_add(0, first_atom, -grad_vectors)
            if want_forces:
                force = -grad_positions
            if want_stress:
                detached: List[torch.Tensor] = []
                for leaf in leaves:
                    detached.append(leaf.detach())
                volume = torch.abs(torch.linalg.det(system.cell.detach()))
                stress = stress_from_strain_gradient(strain_gradient(detached, gradients), volume, True)
        return total, force, stress, accumulators


def _repeat_selection(selection: Optional[torch.Tensor], n_copies: int) -> Optional[Labels]:
    """The engine's selected atoms of one system, for copies ``k < n_copies``."""
    if selection is None:
        return None
    copies = torch.arange(n_copies, dtype=selection.dtype, device=selection.device)
    system = copies.unsqueeze(1).expand(-1, selection.shape[0]).reshape(-1)
    atom = selection.unsqueeze(0).expand(n_copies, -1).reshape(-1)
    return Labels(["system", "atom"], torch.stack([system, atom], dim=1))


def export_symmetrized(
    model,
    path: Optional[str] = None,
    *,
    quadrature,
    batch_size: int = 16,
    chunk_atoms: int = DEFAULT_CHUNK_ATOMS,
    non_conservative: bool = False,
    dtype: Optional[str] = None,
):
    """Wrap ``model`` (path, AtomisticModel or ModelHandle) with a quadrature average;
    save to ``path`` (only once the saved file has been loaded back and evaluated,
    :func:`~ase_symdiag.backends.metatomic.exporting.save_checked`).

    ``quadrature`` (keyword, required) is anything
    :func:`ase_symdiag.o3.quadrature.resolve_quadrature` accepts; the signature is
    that of :func:`~ase_symdiag.backends.metatomic.corrected.export_corrected`. The exported model has the output ``energy`` (per-atom capable if the
    inner model is) and the averages of the inner model's ``energy_uncertainty`` and
    learned features (:mod:`ase_symdiag.backends.metatomic.carried`); the inner
    model's direct force/stress heads are dropped (engines get forces and stress from
    the averaged energy, which are the averaged back-rotated ones), and every other
    output is listed by :func:`dropped_outputs`. Rotated copies run ``min(batch_size, chunk_atoms // N)`` per
    inner call and peak memory is that of one call (see :class:`SymmetrizedEnergy`).

    ``non_conservative=True`` also declares ``non_conservative_force`` and
    ``non_conservative_stress``: the gradients of the averaged energy, computed in
    the same chunked pass (LAMMPS ``non_conservative on``; single MPI rank only, the
    model refuses a strict ``selected_atoms`` subset); their units are the inner
    energy unit over its length unit (and its cube).

    ``dtype`` ("float32"/"float64"; default: the handle's or the model's own): the
    export runs in, and declares, this dtype; the caller's model is not changed.
    """
    import numpy as np

    from ase_symdiag.errors import UsageError
    from ase_symdiag.backends.metatomic.exporting import export_handle
    from ase_symdiag.o3.quadrature import resolve_quadrature

    handle = export_handle(model, dtype)
    q = resolve_quadrature(quadrature)
    if q is None:
        raise UsageError("export_symmetrized needs a quadrature")
    inner_model = handle.model
    capabilities = inner_model.capabilities()
    energy_output = capabilities.outputs[handle.energy_key]
    carried = [name for name in capabilities.outputs.keys() if is_carried(name)]
    module = SymmetrizedEnergy(
        inner_model.module,
        torch.tensor(np.asarray(q.rotations), dtype=handle.dtype),
        torch.tensor(np.asarray(q.weights), dtype=handle.dtype),
        list(inner_model.requested_neighbor_lists()),
        batch_size=batch_size,
        chunk_atoms=chunk_atoms,
        carried=carried,
        inputs=dict(handle.requested_inputs),
    ).eval()
    outputs = {"energy": energy_output}
    for name in carried:
        outputs[name] = capabilities.outputs[name]
    if non_conservative:
        outputs.update(direct_outputs(handle))
    dropped = dropped_outputs(list(capabilities.outputs.keys()), list(outputs.keys()))
    note = "".join(f" Not carried over: {name} ({reason})." for name, reason in dropped.items())
    return wrap_exported(
        module, handle, outputs, path,
        name_suffix=f"symmetrized over {q.name}",
        description=(
            f"Energy{''.join(', ' + name for name in carried)} averaged over the O(3) quadrature '{q.name}' "
            f"({q.size} operations, exact to degree {q.degree}) by ase-symdiag.{note}"
        ),
    )


def dropped_outputs(inner: List[str], exported: List[str]) -> Dict[str, str]:
    """The inner model's outputs a symmetrized export does not carry, and why.

    The energy is averaged (engines differentiate it for forces and stress), and so
    are the scalar outputs of :mod:`ase_symdiag.backends.metatomic.carried`
    (``energy_uncertainty``, learned features); the rest is listed here.
    """
    reasons: Dict[str, str] = {}
    for name in inner:
        if name in exported:
            continue
        if name in (NC_FORCE, NC_STRESS, "non_conservative_forces"):  # the last: metatomic's old name
            reasons[name] = (
                "the inner direct head is not averaged; non_conservative=True gives the gradients of "
                "the averaged energy instead"
            )
        elif name.startswith("energy/") or name.startswith("energy_uncertainty/"):
            reasons[name] = "energy variants are not averaged; only the plain energy and its uncertainty are"
        elif name == "features":
            reasons[name] = "deprecated name of 'feature', which metatomic refuses in new models"
        elif name.startswith("mtt::aux::"):
            reasons[name] = "auxiliary diagnostic, not a model prediction or learned feature"
        else:
            reasons[name] = "not known to be a scalar per property, so its average is not defined without a back-rotation"
    return reasons


def _force_unit(energy_unit: str, length_unit: str) -> str:
    """The unit of ``-dE/dx`` for a model's energy and length units (an empty energy
    unit is taken as eV, as engines do)."""
    return f"{energy_unit or 'eV'}/{length_unit or 'Angstrom'}"


def _stress_unit(energy_unit: str, length_unit: str) -> str:
    """The unit of ``(1/V) dE/d(strain)`` for a model's energy and length units."""
    return f"{energy_unit or 'eV'}/{length_unit or 'Angstrom'}^3"


def direct_outputs(handle) -> Dict[str, ModelOutput]:
    """``non_conservative_force``/``non_conservative_stress`` declarations for an export
    of ``handle``'s model: in its energy unit over its length unit (and its cube)."""
    capabilities = handle.model.capabilities()
    energy_unit = capabilities.outputs[handle.energy_key].unit
    return {
        NC_FORCE: ModelOutput(unit=_force_unit(energy_unit, capabilities.length_unit), sample_kind="atom"),
        NC_STRESS: ModelOutput(unit=_stress_unit(energy_unit, capabilities.length_unit), sample_kind="system"),
    }


def wrap_exported(module, handle, outputs: dict, path, *, name_suffix: str, description: str):
    """An AtomisticModel around ``module`` with the capabilities of ``handle``'s model
    but ``outputs`` and the handle's dtype, metadata extended by
    ``name_suffix``/``description``; saved to ``path`` if given, only once the saved
    file loads back and runs (:func:`~ase_symdiag.backends.metatomic.exporting.save_checked`)."""
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata

    from ase_symdiag.backends.metatomic.exporting import save_checked

    inner_model = handle.model
    capabilities = inner_model.capabilities()
    new_capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=list(capabilities.atomic_types),
        interaction_range=capabilities.interaction_range,
        length_unit=capabilities.length_unit,
        supported_devices=list(capabilities.supported_devices),
        dtype=str(handle.dtype).replace("torch.", ""),
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
        save_checked(exported, path)
    return exported
