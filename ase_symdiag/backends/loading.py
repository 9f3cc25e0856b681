"""One model argument for every model family: what ``load_model(spec)`` understands.

=============================  ==============================================================
``SPEC``                       model
=============================  ==============================================================
``model.pt`` (any other path)  a metatomic model file (:class:`ModelHandle`), as always
``orb-v3-direct:CKPT``         orb-v3 direct architecture with the state_dict in ``CKPT``
``orb-v3-conservative:CKPT``   orb-v3 conservative architecture with the state_dict in ``CKPT``
``mace:FILE`` or ``FILE.model``  a MACE model file (torch-sim's batched ``MaceModel``)
``package.module:callable``    ``callable()``: an ASE calculator or a TorchSim ``ModelInterface``
=============================  ==============================================================

Orb checkpoints are plain ``state_dict`` files (``torch.save(model.state_dict(), CKPT)``,
as orb-models publishes them), read with ``weights_only=True``; the architecture sizes
are read from the tensor shapes, so small and full-size models load alike. Nothing is
downloaded at run time: a pretrained name (``orb-v3-conservative-inf-omat``,
``mace-mp``) or a URL is a one-line error saying so. Every failure is a one-line
:class:`~ase_symdiag.errors.ModelError` (exit status 2 on the command line).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
from typing import Optional, Union

from ase_symdiag.errors import ModelError

_DTYPES = ("float32", "float64")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
#: prefixes of names that orb-models' or mace's loaders would download
_PRETRAINED = ("orb-v", "orb_v", "orb-d", "orb_d", "mace-mp", "mace_mp", "mace-off", "mace_off", "mace-omol", "mace-mpa")


def _torch_dtype(dtype: Optional[str]):
    import torch

    if dtype is None:
        return None
    if dtype not in _DTYPES:
        raise ModelError(f"dtype must be 'float32' or 'float64', got '{dtype}'")
    return getattr(torch, dtype)


def _no_download(spec: str, what: str) -> ModelError:
    return ModelError(
        f"'{spec}' names {what}; ase-symdiag downloads nothing at run time: download the "
        "file yourself and pass its local path (orb-v3-direct:CKPT, orb-v3-conservative:CKPT, mace:FILE)"
    )


def _is_orb_architecture(name: str) -> bool:
    """Whether ``name`` is a key of :data:`ase_symdiag.backends.orb.ARCHITECTURES`; the Orb
    backend (torch, torch-sim) is imported only for names that look like one."""
    if not name.startswith("orb-"):
        return False
    from ase_symdiag.backends.orb import ARCHITECTURES

    return name in ARCHITECTURES


def load_orb(architecture: str, path: str, *, device: Optional[str] = None, dtype: Optional[str] = None):
    """An :class:`~ase_symdiag.backends.orb.OrbModel` of orb ``architecture``
    (``orb-v3-direct`` or ``orb-v3-conservative``) with the state_dict saved in ``path``
    (read with ``weights_only=True``). ``dtype`` default float64."""
    import torch

    from ase_symdiag.backends.orb import OrbModel, architecture_sizes, build_architecture

    spec = f"{architecture}:{path}"
    if _URL.match(path):
        raise _no_download(spec, "a URL")
    if not os.path.isfile(path):
        raise ModelError(f"{spec}: checkpoint file '{path}' does not exist")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors are many and deep
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelError(f"{spec}: cannot read '{path}' as a state_dict (weights only): {first}") from None
    if not isinstance(state_dict, dict):
        raise ModelError(f"{spec}: '{path}' holds a {type(state_dict).__name__}, expected a state_dict")
    sizes = architecture_sizes(state_dict)
    model = build_architecture(architecture, **sizes)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, KeyError, ValueError) as error:
        raise ModelError(
            f"{spec}: the checkpoint does not fit the {architecture} architecture: "
            + " ".join(str(error).split())[:300]
        ) from None
    torch_dtype = _torch_dtype(dtype) or torch.float64
    return OrbModel(model, device=device, dtype=torch_dtype, source=spec)


def load_callable(spec: str):
    """``module:callable`` -> what ``callable()`` returns, checked to be an ASE
    calculator or a TorchSim ``ModelInterface``."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelError(f"'{spec}': cannot import module '{module_name}': {error}") from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelError(f"'{spec}': module '{module_name}' has no attribute '{attribute}'")
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(f"'{spec}': '{attribute}' is not callable")
    try:
        model = target()
    except Exception as error:  # the user's code: report it in one line
        first = (str(error).strip().splitlines() or [""])[0]
        raise ModelError(f"'{spec}': calling {attribute}() failed: {type(error).__name__}: {first}") from None
    from ase_symdiag.backends.ase import is_ase_calculator
    from ase_symdiag.backends.torchsim import is_torchsim_model

    if not (is_ase_calculator(model) or is_torchsim_model(model)):
        raise ModelError(
            f"'{spec}': {attribute}() returned a {type(model).__name__}, expected an ASE "
            "calculator or a TorchSim ModelInterface"
        )
    return model


def load_model(
    spec: Union[str, pathlib.PurePath],
    *,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    variant: Optional[str] = None,
    extensions_directory: Optional[Union[str, pathlib.PurePath]] = None,
):
    """The model named by ``spec`` (table in the module docstring), on ``device``
    ("cpu", "cuda") in ``dtype`` ("float32"/"float64"; default: the model's own, float64
    for Orb and MACE). ``variant`` and ``extensions_directory`` apply to metatomic models
    only. Raises :class:`ModelError` (one line) for anything that cannot be loaded."""
    text = str(spec)
    if not text.strip():
        raise ModelError("empty model name")
    _torch_dtype(dtype)  # a bad dtype is an error for every family
    architecture, colon, rest = text.partition(":")
    metatomic_only = variant is not None or extensions_directory is not None
    if colon and _is_orb_architecture(architecture):
        _only_metatomic(text, variant, extensions_directory)
        return load_orb(architecture, rest, device=device, dtype=dtype)
    if colon and architecture == "mace" or text.endswith(".model") and not colon:
        from ase_symdiag.backends.mace import mace_model

        _only_metatomic(text, variant, extensions_directory)
        path = rest if colon else text
        if _URL.match(path) or (not os.path.exists(path) and path.lower().startswith(_PRETRAINED)):
            raise _no_download(text, "a MACE foundation model or URL")
        return mace_model(path, device=device, dtype=_torch_dtype(dtype))
    if _URL.match(text):
        raise _no_download(text, "a URL")
    if not os.path.exists(text) and text.lower().startswith(_PRETRAINED):
        raise _no_download(text, "a pretrained model that orb-models or mace would download")
    if _CALLABLE.match(text) and not os.path.exists(text):
        if metatomic_only:
            _only_metatomic(text, variant, extensions_directory)
        return load_callable(text)
    from ase_symdiag.backends.metatomic.model import ModelHandle

    return ModelHandle.load(
        text, device=device, dtype=dtype, variant=variant, extensions_directory=extensions_directory
    )


def _only_metatomic(spec: str, variant, extensions_directory) -> None:
    if variant is not None:
        raise ModelError(f"'{spec}': --energy-variant applies to metatomic models only")
    if extensions_directory is not None:
        raise ModelError(f"'{spec}': --extensions applies to metatomic models only")


__all__ = ["load_callable", "load_model", "load_orb"]
