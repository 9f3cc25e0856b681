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
    # measure: every form of model (metatomic file/model/handle, TorchSim ModelInterface,
    # ASE calculator); the data flow is drivers -> backends (samples) -> metrics
    "check_equivariance": "ase_symdiag.drivers.equivariance",
    "EquivarianceReport": "ase_symdiag.metrics.equivariance",
    "structure_spectrum": "ase_symdiag.drivers.spectrum",
    "equigrad": "ase_symdiag.drivers.equigrad",
    "representation_content": "ase_symdiag.drivers.representations",
    "rotational_uncertainty": "ase_symdiag.drivers.uncertainty",
    "symmetrized_prediction": "ase_symdiag.drivers.symmetrize",
    "choose_quadrature": "ase_symdiag.metrics.adaptive",
    # models and quadratures
    "load_model": "ase_symdiag.backends.loading",
    "as_evaluator": "ase_symdiag.backends.dispatch",
    "ModelHandle": "ase_symdiag.backends.metatomic.model",
    "resolve_quadrature": "ase_symdiag.o3.quadrature",
    "haar_rotations": "ase_symdiag.o3.operations",
    # symmetrized and corrected models: ASE calculators, TorchSim models, TorchScript exports
    "SymDiagCalculator": "ase_symdiag.calculator",
    "SymmetrizedCalculator": "ase_symdiag.wrappers",
    "SymmetrizedModel": "ase_symdiag.md.torchsim_models",
    "CorrectedModel": "ase_symdiag.md.torchsim_models",
    "StochasticRotationModel": "ase_symdiag.md.torchsim_models",
    "export_symmetrized": "ase_symdiag.backends.metatomic.export",
    "export_corrected": "ase_symdiag.backends.metatomic.corrected",
    # MD stability runs and users' test suites
    "run_md": "ase_symdiag.md.runner",
    "run_md_batched": "ase_symdiag.md.torchsim",
    "assert_equivariant": "ase_symdiag.testing",
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
