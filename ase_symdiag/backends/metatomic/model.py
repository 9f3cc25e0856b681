"""Loading a metatomic model with clear errors, and what it can compute.

:class:`ModelHandle` wraps a :class:`metatomic.torch.AtomisticModel` (from a ``.pt``
file or an object) together with the device and dtype it runs in, and answers the
questions the rest of ase-symdiag asks: which outputs exist (energy, per-atom
energy, direct forces/stress, features), which atomic types, which neighbour lists,
which inputs it reads from the structure (masses, charges, velocities, ...).

Models with several variants of an output (``energy/pbe``, ``energy/r2scan``; upet
and PET-MAD style) are evaluated in the ``variant`` chosen at loading; the direct
forces/stress and ``energy_uncertainty`` outputs follow the same variant when the
model has it, else its default one (as :class:`metatomic_ase.MetatomicCalculator`).
"""

from __future__ import annotations

import copy
import os
import pathlib
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from ase_symdiag.backends.metatomic.inputs import check_input
from ase_symdiag.errors import ModelError

ENERGY = "energy"
#: metatomic's standard names of direct (non-conservative) force and stress outputs
NC_FORCE = "non_conservative_force"
NC_STRESS = "non_conservative_stress"
UNCERTAINTY = "energy_uncertainty"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def load_file(path: Union[str, pathlib.Path], extensions_directory=None):
    """The ``AtomisticModel`` saved at ``path`` (TorchScript extensions from
    ``extensions_directory``); a :class:`ModelError` in one line if it cannot be read."""
    from metatomic.torch import load_atomistic_model

    path = str(path)
    if not os.path.exists(path):
        raise ModelError(f"model file '{path}' does not exist")
    if os.path.isdir(path):
        raise ModelError(f"model path '{path}' is a directory, expected a .pt file")
    if extensions_directory is not None and not os.path.isdir(str(extensions_directory)):
        raise ModelError(f"extensions directory '{extensions_directory}' does not exist")
    try:
        return load_atomistic_model(path, extensions_directory=extensions_directory)
    except Exception as error:  # TorchScript/zip errors are many and deep
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"could not load '{path}' as a metatomic model (is it a file saved with "
            f"AtomisticModel.save?): {first}"
        ) from None


def variants_of(name: str, outputs) -> list:
    """The variant names of output ``name`` (``"pbe"`` for ``name/pbe``), sorted."""
    return sorted(key[len(name) + 1:] for key in outputs if key.startswith(name + "/"))


def _pick(name: str, outputs, variant: Optional[str] = None) -> Optional[str]:
    """The output key for ``name`` in ``variant``: ``name/variant`` if the model has it,
    else the default ``name``, else its only ``name/...`` variant; None if absent."""
    if variant is not None and f"{name}/{variant}" in outputs:
        return f"{name}/{variant}"
    if name in outputs:
        return name
    variants = variants_of(name, outputs)
    return f"{name}/{variants[0]}" if len(variants) == 1 else None


def _pick_energy(outputs, variant: Optional[str], source: str) -> str:
    """The energy output in ``variant`` (metatomic's ``pick_output`` rules), or a
    one-line :class:`ModelError` naming the variants there are."""
    if variant is not None and not isinstance(variant, str):
        raise ModelError(f"variant must be a string, got {type(variant).__name__}")
    variants = variants_of(ENERGY, outputs)
    if ENERGY not in outputs and not variants:
        raise ModelError(
            f"{source}: the model has no 'energy' output (its outputs are "
            f"{sorted(outputs.keys())}); ase-symdiag needs an energy model"
        )
    if variant is None:
        key = _pick(ENERGY, outputs)
        if key is None:
            raise ModelError(
                f"{source}: the model has several energy variants ({', '.join(variants)}) and no "
                "default one; choose one with variant= (--energy-variant on the command line)"
            )
        return key
    try:  # metatomic's own rules where this version has them
        from metatomic.torch import pick_output
    except ImportError:  # pragma: no cover - older metatomic
        pick_output = None
    if pick_output is not None:
        try:
            return str(pick_output(ENERGY, outputs, variant))
        except Exception:  # a multi-line message: ours is one line
            pass
    elif f"{ENERGY}/{variant}" in outputs:  # pragma: no cover
        return f"{ENERGY}/{variant}"
    known = ", ".join(variants) if variants else "none"
    raise ModelError(f"{source}: the model has no energy variant '{variant}' (its variants: {known})")


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
    variant: Optional[str] = None
    uncertainty_key: Optional[str] = None
    #: ``{name: ModelOutput}`` of the inputs the model reads from the structure
    requested_inputs: dict = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        model,
        *,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        variant: Optional[str] = None,
        extensions_directory: Optional[Union[str, pathlib.PurePath]] = None,
    ) -> "ModelHandle":
        """Load ``model`` (a path or an AtomisticModel) on ``device`` in ``dtype``.

        ``device`` defaults to the first device of the model's ``supported_devices``
        available here; ``dtype`` ("float32"/"float64") defaults to the model's own.
        ``variant``: which ``energy/<variant>`` output to use (default: the model's
        default ``energy``, or its only variant). ``extensions_directory``: where the
        TorchScript extensions of the model are (models exported with extensions).
        A :class:`ModelHandle` is returned as it is when ``device``, ``dtype`` and
        ``variant`` are None or its own; otherwise a new handle of its model with them.
        The caller's model object is never changed: a model that must move to another
        device or dtype is copied first. Raises :class:`ModelError` for a missing/corrupt file, a model without an
        energy output (or without ``variant``), an unsupported device or an unknown dtype.
        """
        from metatomic.torch import pick_device

        if isinstance(model, ModelHandle):
            return model._with(device=device, dtype=dtype, variant=variant)
        source = "<object>"
        if isinstance(model, (str, pathlib.PurePath)):
            source = str(model)
            model = load_file(model, extensions_directory)
        elif not isinstance(model, torch.nn.Module):
            raise ModelError(
                f"expected a metatomic model file or AtomisticModel, got {type(model).__name__}"
            )
        original = getattr(model, "original_name", type(model).__name__)
        if original != "AtomisticModel" or not hasattr(model, "capabilities"):
            raise ModelError(f"{source}: expected a metatomic AtomisticModel, got '{original}'")

        capabilities = model.capabilities()
        outputs = capabilities.outputs
        energy_key = _pick_energy(outputs, variant, source)
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

        # parameters and buffers follow; metatomic only checks the dtype when
        # check_consistency=True, which we do not use for mixed-precision runs
        model = _moved(model, torch_device, torch_dtype if torch_dtype != model_dtype else None, own=source != "<object>")

        return cls(
            model=model,
            device=torch_device,
            dtype=torch_dtype,
            source=source,
            energy_key=energy_key,
            nc_forces_key=_pick(NC_FORCE, outputs, variant),
            nc_stress_key=_pick(NC_STRESS, outputs, variant),
            per_atom_energy=outputs[energy_key].sample_kind == "atom",
            atomic_types=[int(t) for t in capabilities.atomic_types],
            interaction_range=float(capabilities.interaction_range),
            variant=variant,
            uncertainty_key=_pick(UNCERTAINTY, outputs, variant),
            requested_inputs=_requested_inputs(model, source),
        )

    def _with(self, *, device: Optional[str], dtype: Optional[str], variant: Optional[str]) -> "ModelHandle":
        """This handle, or a new one of its model where ``device``/``dtype``/``variant``
        (None: keep this handle's) differ from its own (:meth:`load` for a handle)."""
        if dtype is not None and dtype not in _DTYPES:
            raise ModelError(f"dtype must be 'float32' or 'float64', got '{dtype}'")
        try:
            same_device = device is None or _same_device(torch.device(device), self.device)
        except (RuntimeError, TypeError):
            raise ModelError(f"{self.source}: '{device}' is not a device name (cpu, cuda, cuda:1, ...)") from None
        same_dtype = dtype is None or _DTYPES[dtype] == self.dtype
        same_variant = variant is None or variant == self.variant
        if same_device and same_dtype and same_variant:
            return self
        if device is None:
            device = str(self.device)
        if dtype is None:
            dtype = str(self.dtype).replace("torch.", "")
        if variant is None:
            variant = self.variant
        # the model's tensors are in this handle's dtype, which need not be the one it declares
        model = _moved(self.model, self.device, None if same_dtype else _DTYPES[dtype], own=False)
        try:
            handle = ModelHandle.load(model, device=device, dtype=dtype, variant=variant)
        except ModelError as error:  # name the handle's model, not "<object>"
            raise ModelError(str(error).replace("<object>", self.source, 1)) from None
        handle.source = self.source
        return handle

    @property
    def outputs(self) -> dict:
        """The model's declared outputs, ``{name: ModelOutput}``."""
        return dict(self.model.capabilities().outputs)

    @property
    def has_uncertainty(self) -> bool:
        """Whether the model has an ``energy_uncertainty`` output (in the chosen variant)."""
        return self.uncertainty_key is not None

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


def _same_device(asked: torch.device, current: torch.device) -> bool:
    """Whether ``asked`` (``cuda`` means the current CUDA device) is ``current``."""
    if asked.type != current.type:
        return False
    return asked.index is None or current.index is None or asked.index == current.index


def _moved(model: torch.nn.Module, device: torch.device, dtype: Optional[torch.dtype], own: bool) -> torch.nn.Module:
    """``model`` on ``device``, its floating-point tensors in ``dtype`` (None: as they
    are): the model itself when nothing changes or the model is ``own`` (loaded here
    from a file), else a moved copy (``Module.to`` works in place, and the caller's
    model must not change)."""
    tensors = list(model.parameters()) + list(model.buffers())
    changes = any(
        not _same_device(device, tensor.device)
        or (dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype)
        for tensor in tensors
    )
    if not changes:
        return model
    if not own:
        model = copy.deepcopy(model)
    model = model.to(device=device)
    return model if dtype is None else model.to(dtype=dtype)


def _requested_inputs(model, source: str) -> dict:
    """``{name: ModelOutput}`` of the inputs the model asks for (metatomic >= 0.1.19
    names), checked against what :func:`ase_symdiag.backends.metatomic.inputs.input_arrays`
    can provide."""
    method = getattr(model, "requested_inputs", None)
    if method is None:  # pragma: no cover - older metatomic
        return {}
    try:
        requested = dict(method(use_new_names=True))
    except TypeError:  # pragma: no cover - older metatomic without the keyword
        requested = dict(method())
    for name, option in requested.items():
        check_input(name, option, source)
    return requested
