"""MACE models as batched TorchSim models, with ``mace`` imported only when asked for.

Importing ``mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process
(every later ``torch.load`` without an explicit ``weights_only`` would unpickle
arbitrary code). :func:`import_mace_torchsim` imports it only when a MACE model is
asked for and puts the variable back as it was.

A MACE ``.model`` file is a pickled ``torch.nn.Module``: it cannot be read with
``weights_only=True``, so :func:`mace_model` loads it with ``weights_only=False``.
Load only MACE files you trust (docs: README "Other model families").
"""

from __future__ import annotations

import os
import pathlib
import warnings
from typing import Optional, Union

import torch

from ase_symdiag.errors import ModelError

_FLAG = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
#: what e3nn 0.4's code generation makes torch.jit warn (harmless; an error under pytest)
_E3NN_JIT_WARNING = ".*(TorchScript type system|torch.jit.*deprecated)"


def import_mace_torchsim():
    """torch-sim's ``MaceModel`` class; imports ``mace`` and restores ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``.

    Raises :class:`ModelError` when mace-torch or torch-sim is not installed."""
    before = os.environ.get(_FLAG)
    try:
        with warnings.catch_warnings():
            # torch_sim.models.mace warns (instead of raising) when mace is missing
            warnings.simplefilter("ignore")
            import mace  # noqa: F401  (raises ImportError if missing)
            from torch_sim.models.mace import MaceModel
    except ImportError as error:
        raise ModelError(
            f"MACE models need mace-torch and torch-sim-atomistic (pip install 'ase-symdiag[families]'): {error}"
        ) from None
    finally:
        if before is None:
            os.environ.pop(_FLAG, None)
        else:
            os.environ[_FLAG] = before
    return MaceModel


def mace_model(
    model: Union[str, pathlib.PurePath, torch.nn.Module],
    *,
    device: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
):
    """A torch-sim ``MaceModel`` (batched; energy, forces, stress) of ``model``: a MACE
    ``.model`` file (a pickled module: loaded with ``weights_only=False``, see the
    module docstring) or a MACE ``torch.nn.Module``. ``dtype`` defaults to float64.
    Raises :class:`ModelError` (one line) for a missing or unreadable file or an
    object that is not a MACE model."""
    source = str(model) if isinstance(model, (str, pathlib.PurePath)) else type(model).__name__
    if isinstance(model, (str, pathlib.PurePath)) and not os.path.isfile(str(model)):
        raise ModelError(f"MACE model file '{model}' does not exist")  # before the slow import
    MaceModel = import_mace_torchsim()
    if isinstance(model, (str, pathlib.PurePath)):
        path = str(model)
        try:
            with warnings.catch_warnings():
                # e3nn's code generation (re-run when unpickling) warns through torch.jit
                warnings.filterwarnings("ignore", message=_E3NN_JIT_WARNING)
                model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # pickle/zip errors are many
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelError(f"could not load '{path}' as a MACE model: {first}") from None
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "r_max") or not hasattr(model, "atomic_numbers"):
        raise ModelError(f"{source}: not a MACE model (expected a torch.nn.Module with r_max and atomic_numbers)")
    try:
        wrapped = MaceModel(
            model=model,
            device=torch.device(device or "cpu"),
            dtype=torch.float64 if dtype is None else dtype,
        )
    except (TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise ModelError(f"{source}: cannot wrap as a MACE TorchSim model: {str(error).splitlines()[0]}") from None
    wrapped.source = source
    return wrapped


__all__ = ["import_mace_torchsim", "mace_model"]
