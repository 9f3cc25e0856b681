"""TorchSim models for the batched MD engine: the variants of any model.

The wrappers here take ANY TorchSim ``ModelInterface`` (Orb, MACE,
metatomic-torchsim, a user's) and are ``ModelInterface`` s themselves, so users' own
TorchSim scripts run them as well as ``md --engine torchsim``:

- :class:`SymmetrizedModel`: the average over an O(3) quadrature, all rotated copies
  of all systems as batched systems (chunked by an atom budget);
- :class:`CorrectedModel`: net force (and for finite systems net torque) removed,
  batched;
- :class:`StochasticRotationModel`: a fresh Haar-random O(3) operation per replica
  and step, outputs back-rotated.

:func:`build_variant` names them: ``raw``, ``symmetrized`` (``"adaptive"``: the
cheapest quadrature from the measured breaking spectrum), ``corrected``,
``stochastic``. For a metatomic model, ``raw`` runs through
:class:`~ase_symdiag.backends.metatomic.torchsim_model.BatchedMetatomicModel` (the same
outputs as ``metatomic_torchsim.MetatomicModel``, batched) and ``symmetrized`` is the TorchScript export
:func:`ase_symdiag.backends.metatomic.export.export_symmetrized` (as LAMMPS or i-PI
users run it); for a TorchSim model they are the model itself and
:class:`SymmetrizedModel`.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch
from ase import Atoms

from ase_symdiag.md.errors import MDError
from ase_symdiag.o3.torch_operations import haar_rotations

#: variants this engine builds from a model
TORCHSIM_VARIANTS = ("raw", "symmetrized", "corrected", "stochastic")

try:  # the ModelInterface base class, when torch-sim is installed
    from torch_sim.models.interface import ModelInterface as _ModelBase
except ImportError:  # pragma: no cover - the module then fails at run time with a clear message
    _ModelBase = torch.nn.Module


def require_torchsim(metatomic: bool = True) -> None:
    """Raise :class:`MDError` unless torch-sim (and, with ``metatomic``, metatomic-torchsim) imports."""
    try:
        import torch_sim  # noqa: F401

        if metatomic:
            import metatomic_torchsim  # noqa: F401
    except ImportError as error:
        raise MDError(
            f"the TorchSim engine needs torch-sim-atomistic and metatomic-torchsim (Python >= 3.12): "
            f'pip install -e ".[torchsim]" ({error})'
        ) from None


# --------------------------------------------------------------------------------------
# the stochastic-rotation model


class _WrappedModel(_ModelBase):
    """A TorchSim model around ``inner`` with its device, dtype and stress setting
    (forces always computed)."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self._device = inner.device
        self._dtype = inner.dtype
        self._compute_forces = True
        self._compute_stress = bool(inner.compute_stress)


class StochasticRotationModel(_WrappedModel):
    """A TorchSim model that evaluates ``inner`` on ``x R_s^T`` with a fresh
    Haar-random O(3) operation ``R_s`` per system and call, and returns the
    back-rotated outputs: ``E(R x)``, ``F(R x) R``, ``R^T S(R x) R``.

    Unbiased for the fully symmetrized prediction at the cost of one evaluation; see
    :class:`ase_symdiag.corrections.StochasticRotation`. ``generator`` (a CPU
    ``torch.Generator``, float64 draws: the same rotations on any device) is part of
    the MD checkpoint. ``last_rotations`` holds the ``(n_systems, 3, 3)`` operations
    of the latest call.
    """

    def __init__(self, inner, *, seed: int = 0, include_inversion: bool = True) -> None:
        super().__init__(inner)
        self.include_inversion = bool(include_inversion)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(seed))
        self.last_rotations: Optional[torch.Tensor] = None

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        import torch_sim as ts

        rotations = haar_rotations(state.n_systems, self.generator, self.include_inversion)
        rotations = rotations.to(state.device, state.dtype)
        self.last_rotations = rotations
        per_atom = rotations[state.system_idx]  # (N, 3, 3)
        positions = torch.einsum("nij,nj->ni", per_atom, state.positions)  # x R^T, row by row
        rotated = ts.SimState(
            positions=positions,
            masses=state.masses,
            cell=rotations @ state.cell,  # column-vector cell: R C
            pbc=state.pbc,
            atomic_numbers=state.atomic_numbers,
            system_idx=state.system_idx,
        )
        out = self.inner(rotated)
        result = {"energy": out["energy"]}
        if "forces" in out:
            result["forces"] = torch.einsum("ni,nij->nj", out["forces"], per_atom)  # F(Rx) R
        if "stress" in out:
            result["stress"] = rotations.transpose(1, 2) @ out["stress"] @ rotations
        return result


class SymmetrizedModel(_WrappedModel):
    """A TorchSim model returning ``inner``'s outputs averaged over ``quadrature``:
    ``E = sum_k w_k E(R_k x)``, ``F = sum_k w_k F(R_k x) R_k``,
    ``S = sum_k w_k R_k^T S(R_k x) R_k`` (docs/methods.md §2), for every system of
    the state at once.

    The rotated copies of all systems go through ``inner`` as one state per chunk of
    operations: at most ``batch_size`` operations and about ``chunk_atoms`` atoms
    (:func:`~ase_symdiag.backends.metatomic.evaluation.chunk_size` with the state's
    atom count), so memory stays bounded. ``quadrature``: anything
    :func:`~ase_symdiag.metrics.symmetrize.resolve_quadrature` takes (a degree, a
    name, an :class:`~ase_symdiag.o3.quadrature.O3Quadrature`). Outputs other than
    energy, forces and stress are dropped.
    """

    def __init__(self, inner, quadrature=3, *, batch_size: Optional[int] = 16, chunk_atoms: Optional[int] = None) -> None:
        from ase_symdiag.o3.quadrature import resolve_quadrature

        super().__init__(inner)
        resolved = resolve_quadrature(quadrature)
        if resolved is None:
            raise MDError("SymmetrizedModel needs a quadrature (e.g. 3, 'O', 'lebedev:3')")
        self.quadrature = resolved
        self.batch_size = batch_size
        self.chunk_atoms = chunk_atoms
        self.register_buffer("rotations", torch.tensor(resolved.rotations, dtype=self._dtype, device=self._device))
        self.register_buffer("weights", torch.tensor(resolved.weights, dtype=self._dtype, device=self._device))

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        import torch_sim as ts

        from ase_symdiag.backends.metatomic.evaluation import chunk_size

        n_sys, n_ops = state.n_systems, len(self.weights)
        step = chunk_size(state.n_atoms, n_ops, self.batch_size, self.chunk_atoms)
        energy = torch.zeros(n_sys, dtype=self._dtype, device=self._device)
        forces = torch.zeros_like(state.positions, dtype=self._dtype)
        stress = torch.zeros(n_sys, 3, 3, dtype=self._dtype, device=self._device)
        has_stress = False
        for start in range(0, n_ops, step):
            rot = self.rotations[start:start + step].to(state.positions.dtype)  # (B, 3, 3)
            w = self.weights[start:start + step]
            n_b = len(rot)
            rotated = ts.SimState(
                positions=torch.einsum("bij,nj->bni", rot, state.positions).reshape(-1, 3),  # x R^T
                masses=state.masses.repeat(n_b),
                cell=(rot.unsqueeze(1) @ state.cell.unsqueeze(0)).reshape(-1, 3, 3),  # R C
                pbc=state.pbc,
                atomic_numbers=state.atomic_numbers.repeat(n_b),
                system_idx=(state.system_idx.unsqueeze(0)
                            + n_sys * torch.arange(n_b, device=state.device).unsqueeze(1)).reshape(-1),
            )
            out = self.inner(rotated)
            energy = energy + (w.unsqueeze(1) * out["energy"].detach().reshape(n_b, n_sys)).sum(0)
            f = out["forces"].detach().reshape(n_b, -1, 3)
            forces = forces + torch.einsum("b,bni,bij->nj", w, f, rot)  # F(Rx) R
            if out.get("stress") is not None:
                has_stress = True
                s = out["stress"].detach().reshape(n_b, n_sys, 3, 3)
                stress = stress + torch.einsum("b,bji,bsjk,bkl->sil", w, rot, s, rot)  # R^T S R
        result = {"energy": energy, "forces": forces}
        if has_stress:
            result["stress"] = stress
        return result


class ChunkedModel(_WrappedModel):
    """``inner`` evaluated on consecutive groups of a state's systems with at most
    ``chunk_atoms`` atoms per call (default
    :data:`~ase_symdiag.backends.metatomic.evaluation.CHUNK_ATOMS`; at least one
    system per call), outputs joined in system order.

    On a CPU a model's cost per atom grows with the atoms in one call (measured on
    metatomic models: 3.9 ms/atom for 64 x Cu108 in one call against ~1 ms/atom at
    432-864 atoms; bench/md_throughput.py), so the many replicas of a stability run are
    evaluated in bounded groups. Systems are independent, so the outputs are those of
    ``inner`` on the whole state up to the round-off of a different batch shape.
    """

    #: outputs with one row per system; every other output has one row per atom
    PER_SYSTEM = ("energy", "stress", "direct_stress", "energy_uncertainty")

    def __init__(self, inner, chunk_atoms: Optional[int] = None) -> None:
        super().__init__(inner)
        self.chunk_atoms = chunk_atoms

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        from ase_symdiag.backends.metatomic.torchsim_model import system_chunks

        counts = state.n_atoms_per_system.tolist()
        ranges = system_chunks(counts, self.chunk_atoms)
        if len(ranges) <= 1:
            return dict(self.inner(state))
        parts: Dict[str, list] = {}
        for first, stop in ranges:
            out = self.inner(state[list(range(first, stop))])
            for name, value in out.items():
                parts.setdefault(name, []).append(value)
        return {name: torch.cat(values) for name, values in parts.items()}


class FiniteModel(_WrappedModel):
    """``inner`` without its stress output, for finite (non-periodic) systems: a
    TorchSim model built with ``compute_stress=True`` divides by a zero volume there."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self._compute_stress = False

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        out = dict(self.inner(state))
        out.pop("stress", None)
        return out


class CorrectedModel(_WrappedModel):
    """A TorchSim model whose forces are ``inner``'s with the net force removed (mean
    over each system's atoms) and, for finite systems, the net torque about the
    centroid removed (:class:`ase_symdiag.corrections.NetForce` then
    :class:`~ase_symdiag.corrections.NetTorque`, uniform weights), batched over all
    systems in one set of tensor operations; energy and stress pass through.

    The same forces as :func:`ase_symdiag.backends.metatomic.corrected.export_corrected` run through
    metatomic-torchsim (tested), at the cost of the raw model instead of about four
    times it (that export evaluates the energy, then each system again with autograd).
    """

    def __init__(self, inner, *, net_torque: bool = True) -> None:
        super().__init__(inner)
        self.net_torque = bool(net_torque)

    def forward(self, state, **kwargs) -> Dict[str, torch.Tensor]:
        out = dict(self.inner(state))
        from ase_symdiag.backends.rigid import remove_net_force, remove_net_torque

        forces = out["forces"].to(torch.float64)
        idx = state.system_idx
        weights = torch.ones(len(idx), dtype=torch.float64, device=forces.device)
        forces = remove_net_force(forces, weights, idx, state.n_systems)
        if self.net_torque and not bool(state.pbc.any()):
            forces = remove_net_torque(forces, state.positions.to(torch.float64), weights, idx, state.n_systems)
        out["forces"] = forces.to(out["forces"].dtype)
        return out


# --------------------------------------------------------------------------------------
# variants as TorchSim models


def adaptive_quadrature(model, atoms: Atoms, lmax: int = 3, n_rattled: int = 4, seed: int = 0):
    """The cheapest quadrature whose leftover breaking is below 1 % of the RMS force
    (:func:`ase_symdiag.metrics.adaptive.choose_quadrature`) on ``atoms`` and ``n_rattled``
    rattled copies (0.05 Å); returns the :class:`~ase_symdiag.metrics.adaptive.QuadratureChoice`."""
    from ase_symdiag.drivers.spectrum import structure_spectrum
    from ase_symdiag.metrics.adaptive import choose_quadrature
    from ase_symdiag.structures import from_atoms

    frames = [atoms.copy()]
    for k in range(n_rattled):
        copy = atoms.copy()
        copy.rattle(0.05, seed=seed + k + 1)
        frames.append(copy)
    spectra = [structure_spectrum(model, from_atoms(frame), lmax=lmax)[0] for frame in frames]
    return choose_quadrature(spectra)


def _variant_quadrature(model, atoms: Atoms, symmetrize, seed: int, notes: Optional[List[str]]):
    """``(quadrature, note)`` of the ``symmetrized`` variant: ``symmetrize`` resolved, or
    for ``"adaptive"`` :func:`adaptive_quadrature` on ``atoms`` (``note`` says so, and
    ``notes`` gets a warning when no candidate met the tolerance)."""
    from ase_symdiag.o3.quadrature import resolve_quadrature

    if symmetrize != "adaptive":
        return resolve_quadrature(symmetrize), ""
    choice = adaptive_quadrature(model, atoms, seed=seed)
    if not choice.met and notes is not None:
        notes.append(f"variant 'symmetrized': no candidate quadrature met the adaptive tolerance; {choice.reason}")
    return choice.quadrature, " adaptive" if choice.met else " adaptive, tolerance NOT met"


def build_variant(kind: str, model, atoms: Atoms, *, symmetrize=3, seed: int = 0, batch_size: int = 16,
                  device: Optional[str] = None, neighbor_skin: float = 0.0, corrected_export: bool = False,
                  notes: Optional[List[str]] = None):
    """``(TorchSim model, description)`` of a named variant of ``model`` (a metatomic
    path or AtomisticModel, or any TorchSim ``ModelInterface``: :func:`torchsim_variant`)
    for structures like ``atoms`` (periodic, a slab, or finite).

    ``corrected_export=True`` builds ``corrected`` from
    :func:`~ase_symdiag.backends.metatomic.corrected.export_corrected` through metatomic-torchsim's
    ``non_conservative`` option (as LAMMPS or i-PI users run it) instead of the
    equivalent, cheaper :class:`CorrectedModel`. ``neighbor_skin`` > 0: run metatomic
    models through metatomic-torchsim's ``MetatomicModel`` with that Verlet skin; 0
    (default): :class:`~ase_symdiag.backends.metatomic.torchsim_model.BatchedMetatomicModel`,
    neighbour lists rebuilt every step (each call independent of the history).
    ``notes``: a list that gets a warning line when ``symmetrize="adaptive"`` finds no
    candidate meeting the tolerance (the largest candidate is then used, without a claim)."""
    from ase_symdiag.backends.torchsim import is_torchsim_model

    if is_torchsim_model(model):
        if device is not None:
            raise MDError("a TorchSim model runs on the device it was built on; do not pass device")
        if corrected_export:
            raise MDError("corrected_export applies to metatomic models only")
        return torchsim_variant(kind, model, atoms, symmetrize=symmetrize, seed=seed, batch_size=batch_size,
                                notes=notes)
    from metatomic_torchsim import MetatomicModel

    from ase_symdiag.backends.metatomic.corrected import export_corrected
    from ase_symdiag.backends.metatomic.torchsim_model import BatchedMetatomicModel
    from ase_symdiag.backends.metatomic.export import export_symmetrized
    from ase_symdiag.backends.metatomic.model import ModelHandle

    periodic = bool(atoms.pbc.all())  # stress (pressure) only then: a slab's cell has no volume
    handle = ModelHandle.load(model, device=device)
    options = dict(device=handle.device, compute_stress=periodic, neighbor_skin=neighbor_skin, uncertainty_threshold=None)

    def engine_model(atomistic):
        """The TorchSim model of a metatomic model: ours, batched (bench/md_throughput.py),
        or metatomic-torchsim's when a Verlet skin is asked for."""
        if neighbor_skin:
            return MetatomicModel(atomistic, **options)
        return BatchedMetatomicModel(atomistic, device=handle.device, compute_stress=periodic)

    if kind == "raw":
        return engine_model(handle.model), "raw"
    if kind == "symmetrized":
        quadrature, note = _variant_quadrature(handle, atoms, symmetrize, seed, notes)
        exported = _scripted(export_symmetrized(handle.model, quadrature=quadrature, batch_size=batch_size))
        return engine_model(exported), f"symmetrized ({quadrature.name}, {quadrature.size} ops{note})"
    if kind == "corrected":
        finite = not atoms.pbc.any()  # a net torque only without periodic axes (slabs: net force only)
        what = "net_force, net_torque" if finite else "net_force"
        if corrected_export:
            exported = _scripted(export_corrected(handle.model, net_torque=finite))
            nc = True if periodic else "forces"
            return MetatomicModel(exported, non_conservative=nc, **options), f"corrected ({what}; export)"
        inner = engine_model(handle.model)
        return CorrectedModel(inner, net_torque=finite), f"corrected ({what})"
    if kind == "stochastic":
        inner = engine_model(handle.model)
        return StochasticRotationModel(inner, seed=seed + 2), "stochastic (1 Haar-random O(3) op per step and replica)"
    raise MDError(f"unknown TorchSim variant {kind!r}; expected one of {', '.join(TORCHSIM_VARIANTS)}")


def torchsim_variant(kind: str, model, atoms: Atoms, *, symmetrize=3, seed: int = 0, batch_size: int = 16,
                     notes: Optional[List[str]] = None):
    """``(TorchSim model, description)`` of a named variant of any TorchSim
    ``ModelInterface`` ``model`` for structures like ``atoms`` (periodic, a slab, or
    finite): ``raw`` the model, ``symmetrized`` :class:`SymmetrizedModel`
    (``"adaptive"``: the cheapest quadrature from the model's breaking spectrum on
    ``atoms``; a warning goes to ``notes`` when no candidate meets the tolerance),
    ``corrected`` :class:`CorrectedModel` (net torque only without periodic axes),
    ``stochastic`` :class:`StochasticRotationModel`."""
    periodic = bool(atoms.pbc.all())
    if not periodic and model.compute_stress:
        model = FiniteModel(model)  # a stress over zero volume is not a number
    if kind != "symmetrized":  # SymmetrizedModel bounds its own calls (copies x systems)
        model = ChunkedModel(model)
    if kind == "raw":
        return model, "raw"
    if kind == "symmetrized":
        quadrature, note = _variant_quadrature(model, atoms, symmetrize, seed, notes)
        wrapped = SymmetrizedModel(model, quadrature, batch_size=batch_size)
        return wrapped, f"symmetrized ({wrapped.quadrature.name}, {wrapped.quadrature.size} ops{note})"
    if kind == "corrected":
        finite = not atoms.pbc.any()  # a net torque only without periodic axes (slabs: net force only)
        what = "net_force, net_torque" if finite else "net_force"
        return CorrectedModel(model, net_torque=finite), f"corrected ({what})"
    if kind == "stochastic":
        return StochasticRotationModel(model, seed=seed + 2), "stochastic (1 Haar-random O(3) op per step and replica)"
    raise MDError(f"unknown TorchSim variant {kind!r}; expected one of {', '.join(TORCHSIM_VARIANTS)}")


def _scripted(exported):
    """The exported AtomisticModel as engines load it: saved, then loaded as TorchScript
    (the wrappers of :mod:`ase_symdiag.backends.metatomic.export` are written for TorchScript)."""
    import tempfile

    from metatomic.torch import load_atomistic_model

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "exported.pt")
        exported.save(path)
        return load_atomistic_model(path)
