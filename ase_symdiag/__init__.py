"""ase-symdiag: rotational-symmetry diagnostics for unconstrained ML potentials.

The public names below are imported lazily, so that ``import ase_symdiag.o3`` (numpy
and scipy only) does not pull in ASE, torch models or metatomic. The data flow, one
subpackage per stage, is described in ``docs/architecture.md``.
"""

import importlib
from typing import Any

from ase_symdiag.errors import (
    ModelError,
    ModelEvaluationError,
    RotationError,
    StructureError,
    SymDiagError,
)

__version__ = "0.1.0"

_LAZY = {
    "SymDiagCalculator": "ase_symdiag.calculator",
    "EquivarianceReport": "ase_symdiag.metrics.equivariance",
    # every form of model: metatomic file/model/handle, TorchSim ModelInterface, ASE calculator
    "check_equivariance": "ase_symdiag.drivers.equivariance",
    "structure_spectrum": "ase_symdiag.drivers.spectrum",
    "symmetrized_prediction": "ase_symdiag.drivers.symmetrize",
    "as_evaluator": "ase_symdiag.backends.dispatch",
    "SymmetrizedCalculator": "ase_symdiag.wrappers",
    "SymmetrizedModel": "ase_symdiag.md.torchsim_models",
    "CorrectedModel": "ase_symdiag.md.torchsim_models",
    "StochasticRotationModel": "ase_symdiag.md.torchsim_models",
    "ModelHandle": "ase_symdiag.backends.metatomic.model",
    "haar_rotations": "ase_symdiag.o3.operations",
}

__all__ = sorted(
    ["ModelError", "ModelEvaluationError", "RotationError", "StructureError", "SymDiagError", *_LAZY]
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ase_symdiag' has no attribute {name!r}")


def __dir__():
    return __all__
