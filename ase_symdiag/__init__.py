"""ase-symdiag: rotational-symmetry diagnostics for unconstrained ML potentials."""

from .calculator import SymDiagCalculator
from .equivariance import EquivarianceReport, check_equivariance
from .errors import (
    ModelError,
    ModelEvaluationError,
    RotationError,
    StructureError,
    SymDiagError,
)
from .metatomic_model import ModelHandle
from .operations import haar_rotations

__version__ = "0.1.0"

__all__ = [
    "EquivarianceReport",
    "ModelError",
    "ModelEvaluationError",
    "ModelHandle",
    "RotationError",
    "StructureError",
    "SymDiagCalculator",
    "SymDiagError",
    "check_equivariance",
    "haar_rotations",
]
