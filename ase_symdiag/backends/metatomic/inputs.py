"""The inputs a metatomic model requests (``requested_inputs``), read as metatomic-ase reads them.

Masses, velocities, momenta, charges, magnetic moments, tags and ``ase::arrays::*``
per atom; charge, spin multiplicity and ``ase::info::*`` per system. They come from
the ASE Atoms (:func:`input_arrays`), or from their defaults for a bare structure;
vector inputs (velocities, momenta, per-atom 3-vector arrays) turn with the
structure, magnetic moments as pseudo-vectors (:func:`rotated_inputs`).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Protocol

import numpy as np
import torch

from ase_symdiag.errors import ModelError, StructureError


class InputSource(Protocol):
    """What the functions here read of a model (a
    :class:`~ase_symdiag.backends.metatomic.model.ModelHandle`, which imports this
    module to check the inputs its model requests)."""

    requested_inputs: Mapping[str, Any]  # {name: metatomic ModelOutput}
    dtype: torch.dtype
    device: torch.device

__all__ = ["PSEUDOVECTOR_INPUTS", "VECTOR_INPUTS", "InputSource", "check_input", "input_arrays", "input_tensormap", "rotated_inputs"]


#: per-atom inputs: name -> (properties name, unit, ASE getter, default for a bare structure)
_ATOM_INPUTS = {
    "mass": ("mass", "u", lambda a: a.get_masses(), lambda n: _standard_masses(n)),
    "velocity": ("velocity", "(eV/u)^(1/2)", lambda a: a.get_velocities(), lambda n: np.zeros((len(n), 3))),
    "momentum": ("momentum", "(eV*u)^(1/2)", lambda a: a.get_momenta(), lambda n: np.zeros((len(n), 3))),
    "charge": ("charge", "e", lambda a: _atom_charges(a), lambda n: np.zeros(len(n))),
    "ase::initial_magmoms": (
        "magnetic_moment", "e * hbar / (2 * m_e)", lambda a: a.get_initial_magnetic_moments(), lambda n: np.zeros(len(n))
    ),
    "ase::initial_charges": ("charge", "e", lambda a: a.get_initial_charges(), lambda n: np.zeros(len(n))),
    "ase::tags": ("tag", "", lambda a: a.get_tags(), lambda n: np.zeros(len(n))),
}
#: per-system inputs, read from ``atoms.info`` as metatomic-ase does
_SYSTEM_INPUTS = {
    "charge": ("charge", "e", lambda a: float(a.info.get("charge", 0.0)), 0.0),
    "spin_multiplicity": (
        "spin_multiplicity", "",
        lambda a: float(a.info.get("spin_multiplicity", a.info.get("spin", 1))), 1.0,
    ),
}
#: vector inputs turn with the structure (``v' = R v``), pseudo-vectors as ``det(R) R v``
VECTOR_INPUTS = ("velocity", "momentum")
PSEUDOVECTOR_INPUTS = ("ase::initial_magmoms",)


def _standard_masses(numbers) -> np.ndarray:
    from ase.data import atomic_masses

    return atomic_masses[np.asarray(numbers, dtype=int)]


def _atom_charges(atoms) -> np.ndarray:
    try:
        return atoms.get_charges()
    except Exception:  # no calculator with charges: the initial ones, as metatomic-ase
        return atoms.get_initial_charges()


def check_input(name: str, option, source: str = "model") -> None:
    """Raise :class:`ModelError` if the model asks for an input we cannot provide."""
    kind = option.sample_kind
    if kind == "atom" and (name in _ATOM_INPUTS or name.startswith("ase::arrays::")):
        return
    if kind == "system" and (name in _SYSTEM_INPUTS or name.startswith("ase::info::")):
        return
    raise ModelError(
        f"{source}: the model requests the {kind} input '{name}', which ase-symdiag cannot "
        "provide (known: per-atom " + ", ".join(_ATOM_INPUTS) + ", ase::arrays::*; per-system "
        + ", ".join(_SYSTEM_INPUTS) + ", ase::info::*)"
    )


def input_arrays(handle: InputSource, atoms=None, numbers=None) -> Dict[str, np.ndarray]:
    """The inputs ``handle``'s model requests, as arrays: per-atom (N,) or (N, 3),
    per-system (1,). Read from the ASE ``atoms`` as metatomic-ase does (masses,
    velocities, momenta, charges, ``atoms.info["charge"]``, ...), or, without atoms,
    the defaults of a bare structure of atomic ``numbers`` (standard masses, zero
    velocities and charges, spin multiplicity 1). Per-atom 3-vectors from
    ``ase::arrays::*`` are turned as (polar) vectors by :func:`rotated_inputs`."""
    if numbers is None and atoms is not None:
        numbers = atoms.numbers
    arrays: Dict[str, np.ndarray] = {}
    for name, option in handle.requested_inputs.items():
        if option.sample_kind == "atom":
            if name.startswith("ase::arrays::"):
                key = name[len("ase::arrays::"):]
                if atoms is None or key not in atoms.arrays:
                    raise StructureError(
                        f"the model requests '{name}': the structure has no per-atom array '{key}'"
                    )
                values = np.asarray(atoms.arrays[key], dtype=np.float64)
            else:
                _, _, getter, default = _ATOM_INPUTS[name]
                values = np.asarray(getter(atoms) if atoms is not None else default(numbers), dtype=np.float64)
            if values.shape[:1] != (len(numbers),) or values.ndim > 2 or (values.ndim == 2 and values.shape[1] != 3):
                raise StructureError(f"input '{name}' must have shape (N,) or (N, 3), got {values.shape}")
        else:
            if name.startswith("ase::info::"):
                key = name[len("ase::info::"):]
                if atoms is None or key not in atoms.info:
                    raise StructureError(f"the model requests '{name}': the structure has no info '{key}'")
                raw = atoms.info[key]
            else:
                _, _, getter, default = _SYSTEM_INPUTS[name]
                raw = getter(atoms) if atoms is not None else default
            try:
                values = np.array([float(raw)])
            except (TypeError, ValueError):
                raise StructureError(f"input '{name}' must be a number, got {raw!r}") from None
        if not np.all(np.isfinite(values)):
            raise StructureError(f"input '{name}' is not finite")
        arrays[name] = values
    return arrays


def input_tensormap(handle: InputSource, name: str, values: torch.Tensor):
    """One system's input ``name`` (values (N,), (N, 3) or (1,)) as metatomic-ase builds it."""
    from metatensor.torch import Labels, TensorBlock, TensorMap

    option = handle.requested_inputs[name]
    device = handle.device
    if option.sample_kind == "atom":
        n = values.shape[0]
        samples = Labels(
            ["system", "atom"],
            torch.stack([torch.zeros(n, dtype=torch.int32), torch.arange(n, dtype=torch.int32)], dim=1).to(device),
            assume_unique=True,
        )
        properties_name, unit = _ATOM_INPUTS.get(name, ("_", ""))[:2]
    else:
        samples = Labels(["system"], torch.zeros((1, 1), dtype=torch.int32, device=device), assume_unique=True)
        properties_name, unit = _SYSTEM_INPUTS.get(name, ("_", ""))[:2]
    components = []
    if values.dim() == 2:
        components = [Labels(["xyz"], torch.arange(3, dtype=torch.int32, device=device).reshape(-1, 1))]
    block = TensorBlock(
        values=values[..., None],
        samples=samples,
        components=components,
        properties=Labels([properties_name], torch.zeros((1, 1), dtype=torch.int32, device=device)),
    )
    tensor = TensorMap(Labels(["_"], torch.zeros((1, 1), dtype=torch.int32, device=device)), [block])
    tensor.set_info("unit", unit)
    return tensor


def rotated_inputs(handle: InputSource, arrays: Mapping[str, np.ndarray], rot: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``{name: (B, ...)}``: each input in the frame of each of the ``B`` operations."""
    out = {}
    det = torch.linalg.det(rot)
    for name, values in arrays.items():
        tensor = torch.as_tensor(np.asarray(values), dtype=handle.dtype, device=handle.device)
        if tensor.dim() == 2 and (name in VECTOR_INPUTS or name in PSEUDOVECTOR_INPUTS or name.startswith("ase::arrays::")):
            turned = tensor.unsqueeze(0) @ rot.transpose(1, 2)
            if name in PSEUDOVECTOR_INPUTS:
                turned = turned * det[:, None, None]
            out[name] = turned
        else:
            out[name] = tensor.unsqueeze(0).expand((rot.shape[0],) + tuple(tensor.shape))
    return out
