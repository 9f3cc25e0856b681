"""Batched evaluation of rotated copies through any TorchSim ``ModelInterface``.

The K rotated copies of one structure (atoms and cell together, ``x' = x R^T``;
TorchSim's column-vector cell ``C' = R C``) are simply a batch of K systems: they go
through the model as one :class:`torch_sim.SimState` per chunk, a chunk holding at
most ``batch_size`` copies and about ``chunk_atoms`` atoms (the budget of the
metatomic backend, :func:`~ase_symdiag.backends.metatomic.evaluation.chunk_size`),
so memory stays bounded whatever the number of operations. The model builds its own
neighbour lists and computes its own forces and stress (Orb, MACE, Lennard-Jones,
metatomic-torchsim, a user's); outputs are returned in the *rotated* frame, in the
chunk format of :func:`~ase_symdiag.backends.metatomic.evaluation.evaluate_chunks`,
so every metric runs on them unchanged.

Output keys read from the model: ``energy`` (S,), ``forces`` (N, 3), ``stress``
(S, 3, 3) and, if present, ``energies`` (N,) per-atom energies, ``direct_forces``
(N, 3) and ``direct_stress`` (S, 3, 3) (the direct heads of a conservative model).
Units: eV, eV/Å, eV/Å^3 with ASE's sign (``dE/d(strain) / V``), TorchSim's convention.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from ase_symdiag.backends.samples import Predictions, check_finite, join_chunks
from ase_symdiag.errors import ModelEvaluationError
from ase_symdiag.structures import Structure, from_atoms


def is_torchsim_model(model) -> bool:
    """True for an instance of TorchSim's ``ModelInterface`` (False without torch-sim)."""
    try:
        from torch_sim.models.interface import ModelInterface
    except ImportError:  # pragma: no cover - torch-sim is a dependency of the extra
        return False
    return isinstance(model, ModelInterface)


def model_name(model) -> str:
    """How reports name a TorchSim model: its ``description``/``source`` if set, else its type."""
    return str(getattr(model, "description", None) or getattr(model, "source", None) or type(model).__name__)


def rotated_state(model, structure: Structure, rotations: np.ndarray):
    """A SimState of ``structure`` rotated by each of ``rotations`` (B, 3, 3), one system each."""
    import torch
    import torch_sim as ts
    from ase.data import atomic_masses

    device, dtype = model.device, model.dtype
    n_atoms, n_copies = len(structure), len(rotations)
    rot = torch.tensor(np.asarray(rotations), dtype=dtype, device=device)
    positions = torch.tensor(structure.positions, dtype=dtype, device=device)
    cell = torch.tensor(structure.cell, dtype=dtype, device=device)  # rows = lattice vectors
    numbers = torch.tensor(structure.numbers, dtype=torch.long, device=device)
    masses = torch.as_tensor(atomic_masses[structure.numbers], dtype=dtype, device=device)
    return ts.SimState(
        positions=(positions.unsqueeze(0) @ rot.transpose(1, 2)).reshape(-1, 3),  # x R^T
        masses=masses.repeat(n_copies),
        cell=rot @ cell.T.unsqueeze(0),  # column vectors: R C
        pbc=torch.tensor(structure.pbc, dtype=torch.bool, device=device),
        atomic_numbers=numbers.repeat(n_copies),
        system_idx=torch.arange(n_copies, device=device).repeat_interleave(n_atoms),
    )


def torchsim_chunks(
    model,
    structure: Structure,
    rotations: Optional[np.ndarray] = None,
    *,
    forces: bool = True,
    stress: bool = True,
    energies: bool = False,
    direct: bool = False,
    batch_size: Optional[int] = 16,
    chunk_atoms: Optional[int] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Iterator[Tuple[int, int, Dict[str, np.ndarray]]]:
    """Evaluate ``structure`` rotated by each of ``rotations`` ((K, 3, 3), default the
    identity) through the TorchSim ``model``, one chunk at a time.

    Yields ``(start, stop, {name: (stop - start, ...) float64 array})`` with the names
    of :func:`~ase_symdiag.backends.metatomic.evaluation.evaluate_chunks`: ``energy``
    always; ``forces`` / ``stress`` (fully periodic structures only) when requested
    and computed by the model; ``energies`` when requested and returned;
    ``direct_forces`` / ``direct_stress`` with ``direct`` when the model returns them.
    Each chunk is checked for non-finite values (:class:`ModelEvaluationError` naming
    the structure) before it is yielded. ``progress`` is called with the number of
    operations done after each chunk.
    """
    from ase_symdiag.backends.metatomic.evaluation import chunk_size

    if rotations is None:
        rotations = np.eye(3)[None]
    rotations = np.asarray(rotations, dtype=np.float64)
    n_ops, n_atoms = len(rotations), len(structure)
    label = structure.label or "structure"
    source = model_name(model)
    step = chunk_size(n_atoms, n_ops, batch_size, chunk_atoms)
    periodic = structure.periodic
    wanted = {
        "energy": True,
        "forces": forces,
        "stress": stress and periodic,
        "energies": energies,
        "direct_forces": direct,
        "direct_stress": direct and periodic,
    }
    for start in range(0, n_ops, step):
        stop = min(start + step, n_ops)
        n_batch = stop - start
        state = rotated_state(model, structure, rotations[start:stop])
        try:
            out = model(state)
        except ModelEvaluationError:
            raise
        except Exception as error:
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            raise ModelEvaluationError(
                f"model '{source}' failed on {label} (pbc={structure.pbc.tolist()}): "
                f"{lines[-1].strip() if lines else type(error).__name__}"
            ) from None
        if "energy" not in out:
            raise ModelEvaluationError(f"model '{source}' returned no 'energy' for {label}")
        shapes = {"energy": (n_batch,), "energies": (n_batch, n_atoms), "forces": (n_batch, n_atoms, 3),
                  "direct_forces": (n_batch, n_atoms, 3), "stress": (n_batch, 3, 3), "direct_stress": (n_batch, 3, 3)}
        chunk: Dict[str, np.ndarray] = {}
        for name, want in wanted.items():
            if not want or out.get(name) is None:
                continue
            value = out[name].detach().to("cpu").double().numpy()
            if value.size != int(np.prod(shapes[name])):
                raise ModelEvaluationError(
                    f"model '{source}' returned '{name}' of shape {tuple(value.shape)} for {n_batch} "
                    f"copies of {label} ({n_atoms} atoms); expected {shapes[name]} or its flat form"
                )
            chunk[name] = value.reshape(shapes[name])
        del out, state
        _checked(chunk, label=label, source=source)
        if progress is not None:
            progress(n_batch)
        yield start, stop, chunk


def _checked(arrays: Dict[str, np.ndarray], *, label: str, source: str) -> Predictions:
    """Chunk arrays as :class:`Predictions`, raising on NaN or infinite values."""
    return check_finite(Predictions(**arrays), label=label, source=source)


def torchsim_predictions(
    model,
    atoms,
    rotations: Optional[np.ndarray] = None,
    *,
    label: str = "",
    forces: bool = True,
    stress: bool = True,
    energies: bool = False,
    direct: bool = False,
    batch_size: Optional[int] = 16,
    chunk_atoms: Optional[int] = None,
) -> Predictions:
    """:class:`Predictions` (rotated frame, float64, checked finite) of ``atoms`` (ASE
    Atoms or a :class:`~ase_symdiag.structures.Structure`) under ``rotations``
    ((K, 3, 3), default identity) through the TorchSim ``model``; keywords as
    :func:`torchsim_chunks`."""
    structure = atoms if isinstance(atoms, Structure) else from_atoms(atoms, label=label or atoms.get_chemical_formula())
    joined = join_chunks(torchsim_chunks(
        model, structure, rotations, forces=forces, stress=stress, energies=energies, direct=direct,
        batch_size=batch_size, chunk_atoms=chunk_atoms,
    ))
    return _checked(joined, label=structure.label or "structure", source=model_name(model))


__all__ = ["is_torchsim_model", "model_name", "rotated_state", "torchsim_chunks", "torchsim_predictions"]
