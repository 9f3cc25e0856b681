"""metatrain checkpoints (``.ckpt``) as models, with every layer of a PET exposed.

metatrain's PET returns its intermediate layers through *diagnostic* outputs
(``metatrain/pet/modules/diagnostic.py``): a request for ``mtt::feature::<module>``
registers a forward hook on ``backend.<module>``. The hooks run only in eager mode
(``not torch.jit.is_scripting()`` in ``metatrain/pet/model.py``), so an exported
``.pt`` (TorchScript) declares and returns only ``feature``; the layers need the
checkpoint, which :func:`checkpoint_handle` loads with metatrain's own API and wraps,
uncompiled, in a :class:`metatomic.torch.AtomisticModel` whose capabilities also
declare the diagnostic outputs (:func:`diagnostic_outputs`):

- ``mtt::feature::gnn_layers.<i>_node`` (per atom) and ``..._edge`` (per pair) for
  each of the ``num_gnn_layers`` message-passing layers;
- ``mtt::feature::node_heads.<target>.<j>`` and ``edge_heads.<target>.<j>`` for each
  readout layer ``j`` of each target's head.

Which weights: ``weights="best"`` is what ``mtt export`` and
``metatrain.utils.io.load_model`` export (the best validation epoch so far);
``weights="epoch"`` the weights of the epoch at which the checkpoint was written
(metatrain's ``restart`` context), what a training history needs.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

from ase_symdiag.errors import ModelError

#: metatrain's diagnostic prefix (``metatrain.pet.modules.diagnostic.DIAGNOSTIC_PREFIX``)
DIAGNOSTIC_PREFIX = "mtt::feature::"
#: checkpoint suffix
CHECKPOINT_SUFFIX = ".ckpt"
WEIGHTS = ("best", "epoch")


def is_checkpoint(path) -> bool:
    """Whether ``path`` names a metatrain checkpoint (by its ``.ckpt`` ending)."""
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(CHECKPOINT_SUFFIX)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def read_checkpoint(path: str) -> dict:
    """The checkpoint dictionary ``mtt train`` wrote to ``path`` (``torch.load``)."""
    import torch

    path = str(path)
    if not os.path.isfile(path):
        raise ModelError(f"checkpoint '{path}' does not exist")
    try:
        checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as error:  # zip/pickle errors are many
        raise ModelError(f"could not read '{path}' as a metatrain checkpoint: {_one_line(error)}") from None
    if not isinstance(checkpoint, dict) or "architecture_name" not in checkpoint:
        raise ModelError(f"'{path}' is not a metatrain checkpoint (no 'architecture_name')")
    return checkpoint


def checkpoint_epoch(checkpoint: dict) -> Optional[int]:
    """The epoch at which the checkpoint was written (None for a model's bare checkpoint)."""
    epoch = checkpoint.get("epoch")
    return None if epoch is None else int(epoch)


def model_from_checkpoint(path: str, weights: str = "best"):
    """The metatrain model (eager, in eval mode) of checkpoint ``path``.

    ``weights="best"``: metatrain's ``export`` context (``load_model``); ``"epoch"``:
    its ``restart`` context, the weights at the checkpoint's epoch.
    """
    import logging

    if weights not in WEIGHTS:
        raise ModelError(f"weights must be one of {WEIGHTS}, got '{weights}'")
    try:
        from metatrain.utils.io import model_from_checkpoint as _from_checkpoint
    except ImportError:
        raise ModelError(f"{path}: reading metatrain checkpoints needs metatrain (pip install metatrain)") from None
    checkpoint = read_checkpoint(path)
    if weights == "best" and checkpoint.get("best_model_state_dict") is None:
        weights = "epoch"  # a checkpoint written before any validation: only the current weights
    logger = logging.getLogger("metatrain")
    level = logger.level
    logger.setLevel(logging.WARNING)  # "Using best model from epoch ..." is not for our output
    try:
        model = _from_checkpoint(checkpoint, context="export" if weights == "best" else "restart")
    except Exception as error:
        raise ModelError(f"metatrain could not load checkpoint '{path}': {_one_line(error)}") from None
    finally:
        logger.setLevel(level)
    return model.eval()


def diagnostic_outputs(model) -> Dict[str, object]:
    """``{name: ModelOutput}`` of the per-layer diagnostic outputs of a metatrain PET,
    in network order: each GNN layer's node (per atom) and edge (per pair) features,
    then each target's node and edge heads. Empty for models without them."""
    from metatomic.torch import ModelOutput

    backend = getattr(model, "backend", None)
    layers = getattr(backend, "gnn_layers", None)
    if layers is None:
        return {}
    outputs: Dict[str, object] = {}
    for i in range(len(layers)):
        outputs[f"{DIAGNOSTIC_PREFIX}gnn_layers.{i}_node"] = ModelOutput(sample_kind="atom", description=f"node features after GNN layer {i}")
        outputs[f"{DIAGNOSTIC_PREFIX}gnn_layers.{i}_edge"] = ModelOutput(sample_kind="atom_pair", description=f"edge features after GNN layer {i}")
    for kind, sample_kind in (("node", "atom"), ("edge", "atom_pair")):
        heads = getattr(backend, f"{kind}_heads", {})
        for target in heads.keys():
            for j in range(len(heads[target])):
                outputs[f"{DIAGNOSTIC_PREFIX}{kind}_heads.{target}.{j}"] = ModelOutput(
                    sample_kind=sample_kind, description=f"{kind} head {j} of '{target}'"
                )
    return outputs


def checkpoint_atomistic_model(path: str, weights: str = "best"):
    """An eager :class:`~metatomic.torch.AtomisticModel` of checkpoint ``path`` whose
    capabilities declare the exported outputs and the :func:`diagnostic_outputs`."""
    from metatomic.torch import AtomisticModel, ModelCapabilities

    model = model_from_checkpoint(path, weights)
    try:
        exported = model.export()  # metatrain's own capabilities and metadata, not compiled
    except Exception as error:
        raise ModelError(f"metatrain could not export checkpoint '{path}': {_one_line(error)}") from None
    capabilities = exported.capabilities()
    # the outputs the model itself declares (capabilities() also lists the deprecated
    # aliases AtomisticModel adds, which a second wrapper would take for the model's own)
    declared = list(exported._model_capabilities_outputs_names)
    outputs = diagnostic_outputs(model)  # network order: layers, heads, then the model's own
    outputs.update({name: output for name, output in capabilities.outputs.items() if name in declared})
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=capabilities.atomic_types,
        interaction_range=capabilities.interaction_range,
        length_unit=capabilities.length_unit,
        supported_devices=capabilities.supported_devices,
        dtype=capabilities.dtype,
    )
    return AtomisticModel(exported.module, exported.metadata(), capabilities)


def checkpoint_handle(
    path: str,
    *,
    weights: str = "best",
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    variant: Optional[str] = None,
):
    """A :class:`~ase_symdiag.backends.metatomic.model.ModelHandle` of a metatrain
    checkpoint, its ``source`` the checkpoint's path."""
    from ase_symdiag.backends.metatomic.model import ModelHandle

    handle = ModelHandle.load(checkpoint_atomistic_model(path, weights), device=device, dtype=dtype, variant=variant)
    handle.source = str(path)
    return handle


def exported_metatrain_architecture(handle) -> Optional[str]:
    """The metatrain architecture class (``"PET"``) of an exported (TorchScript)
    model, or None: its per-layer features need the checkpoint."""
    import torch

    module = getattr(handle.model, "module", None)
    if not isinstance(module, torch.jit.ScriptModule):  # eager: a checkpoint's model
        return None
    name = getattr(module, "original_name", None)
    return name if name in ("PET",) else None


def checkpoint_note(handle) -> Optional[str]:
    """One line for an exported metatrain PET: only ``feature`` is analysed, the
    per-layer features need the checkpoint (None for every other model)."""
    architecture = exported_metatrain_architecture(handle)
    if architecture is None:
        return None
    return (
        f"note: {handle.source} is an exported metatrain {architecture}: it declares and returns only "
        f"its final 'feature'; the per-layer features (mtt::feature::gnn_layers.<i>_node/_edge, heads) "
        f"are computed only in eager mode and need the model's checkpoint (.ckpt from mtt train)"
    )


_EPOCH = re.compile(r"model_(\d+)\.ckpt$")


def training_checkpoints(directory: str) -> List[tuple]:
    """``[(epoch, path), ...]``, sorted by epoch, of the ``model_<epoch>.ckpt`` files
    that ``mtt train`` wrote every ``checkpoint_interval`` epochs under ``directory``
    (searched recursively: the run folder or its ``outputs/`` parent)."""
    if not os.path.isdir(directory):
        raise ModelError(f"training directory '{directory}' does not exist")
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            match = _EPOCH.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(root, name)))
    if not found:
        raise ModelError(
            f"no model_<epoch>.ckpt under '{directory}' (mtt train writes them every "
            f"'checkpoint_interval' epochs)"
        )
    epochs = [epoch for epoch, _ in found]
    if len(set(epochs)) != len(epochs):
        raise ModelError(f"'{directory}' holds several training runs (epochs repeat): give one run's folder")
    return sorted(found)
