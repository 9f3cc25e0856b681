"""Loading a metatomic model with clear errors, and what it can compute.

:class:`ModelHandle` wraps a :class:`metatomic.torch.AtomisticModel` (from a ``.pt``
file or an object) together with the device and dtype it runs in, and answers the
questions the rest of ase-symdiag asks: which outputs exist (energy, per-atom
energy, direct forces/stress, features), which atomic types, which neighbour lists.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from ase_symdiag.errors import ModelError

ENERGY = "energy"
NC_FORCES = "non_conservative_force"
NC_STRESS = "non_conservative_stress"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _load_file(path: Union[str, pathlib.Path]):
    from metatomic.torch import load_atomistic_model

    path = str(path)
    if not os.path.exists(path):
        raise ModelError(f"model file '{path}' does not exist")
    if os.path.isdir(path):
        raise ModelError(f"model path '{path}' is a directory, expected a .pt file")
    try:
        return load_atomistic_model(path)
    except Exception as error:  # TorchScript/zip errors are many and deep
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"could not load '{path}' as a metatomic model (is it a file saved with "
            f"AtomisticModel.save?): {first}"
        ) from None


def _pick(name: str, outputs) -> Optional[str]:
    """The output key for ``name``: exact name, else its ``name/variant`` if unique."""
    if name in outputs:
        return name
    variants = [key for key in outputs if key.startswith(name + "/")]
    return variants[0] if len(variants) == 1 else None


@dataclass
class ModelHandle:
    """A metatomic model ready to run on one device in one dtype."""

    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    source: str = "<object>"
    energy_key: str = ENERGY
    nc_forces_key: Optional[str] = None
    nc_stress_key: Optional[str] = None
    per_atom_energy: bool = False
    atomic_types: list = field(default_factory=list)
    interaction_range: float = 0.0

    @classmethod
    def load(
        cls,
        model,
        *,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
    ) -> "ModelHandle":
        """Load ``model`` (a path or an AtomisticModel) on ``device`` in ``dtype``.

        ``device`` defaults to the first device of the model's ``supported_devices``
        available here; ``dtype`` ("float32"/"float64") defaults to the model's own.
        Raises :class:`ModelError` for a missing/corrupt file, a model without an
        energy output, an unsupported device or an unknown dtype.
        """
        from metatomic.torch import pick_device

        source = "<object>"
        if isinstance(model, (str, pathlib.PurePath)):
            source = str(model)
            model = _load_file(model)
        elif not isinstance(model, torch.nn.Module):
            raise ModelError(
                f"expected a metatomic model file or AtomisticModel, got {type(model).__name__}"
            )
        original = getattr(model, "original_name", type(model).__name__)
        if original != "AtomisticModel" or not hasattr(model, "capabilities"):
            raise ModelError(f"{source}: expected a metatomic AtomisticModel, got '{original}'")

        capabilities = model.capabilities()
        outputs = capabilities.outputs
        energy_key = _pick(ENERGY, outputs)
        if energy_key is None:
            raise ModelError(
                f"{source}: the model has no 'energy' output (its outputs are "
                f"{sorted(outputs.keys())}); ase-symdiag needs an energy model"
            )
        try:
            device_name = pick_device(capabilities.supported_devices, device)
        except Exception as error:
            raise ModelError(
                f"{source}: cannot run on device '{device}' (model supports "
                f"{list(capabilities.supported_devices)}): {str(error).splitlines()[0]}"
            ) from None
        torch_device = torch.device(device_name)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ModelError(f"{source}: device 'cuda' requested but CUDA is not available")
        model_dtype = _DTYPES.get(capabilities.dtype)
        if model_dtype is None:
            raise ModelError(f"{source}: model declares unknown dtype '{capabilities.dtype}'")
        if dtype is None:
            torch_dtype = model_dtype
        elif dtype in _DTYPES:
            torch_dtype = _DTYPES[dtype]
        else:
            raise ModelError(f"dtype must be 'float32' or 'float64', got '{dtype}'")

        model = model.to(device=torch_device)
        if torch_dtype != model_dtype:
            # parameters and buffers follow; metatomic only checks the dtype when
            # check_consistency=True, which we do not use for mixed-precision runs
            model = model.to(dtype=torch_dtype)

        return cls(
            model=model,
            device=torch_device,
            dtype=torch_dtype,
            source=source,
            energy_key=energy_key,
            nc_forces_key=_pick(NC_FORCES, outputs),
            nc_stress_key=_pick(NC_STRESS, outputs),
            per_atom_energy=outputs[energy_key].sample_kind == "atom",
            atomic_types=[int(t) for t in capabilities.atomic_types],
            interaction_range=float(capabilities.interaction_range),
        )

    @property
    def outputs(self) -> dict:
        """The model's declared outputs, ``{name: ModelOutput}``."""
        return dict(self.model.capabilities().outputs)

    @property
    def has_direct_forces(self) -> bool:
        return self.nc_forces_key is not None

    @property
    def has_direct_stress(self) -> bool:
        return self.nc_stress_key is not None

    def neighbor_list_options(self) -> list:
        """The neighbour lists the model requests (metatomic NeighborListOptions)."""
        return list(self.model.requested_neighbor_lists())

    def check_types(self, numbers, label: str = "structure") -> None:
        """Raise :class:`ModelError` if ``numbers`` holds a type the model lacks."""
        from ase_symdiag.errors import StructureError

        unsupported = sorted(set(int(z) for z in numbers) - set(self.atomic_types))
        if unsupported:
            from ase.data import chemical_symbols

            names = ", ".join(f"{chemical_symbols[z] if 0 < z < len(chemical_symbols) else z} (Z={z})" for z in unsupported)
            raise StructureError(
                f"{label}: the model does not support {names}; it supports atomic "
                f"numbers {self.atomic_types}"
            )
