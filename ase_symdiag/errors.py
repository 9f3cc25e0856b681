"""Exceptions raised by ase-symdiag for bad input.

Every user-facing problem (a bad model file, a bad structure, a bad rotation)
raises a subclass of :class:`SymDiagError` whose message names the problem, so that
neither the CLI nor a user script ever shows a traceback from deep inside torch.
"""

from __future__ import annotations


class SymDiagError(ValueError):
    """Base class of every input error raised by ase-symdiag."""


class ModelError(SymDiagError):
    """The model file or object is missing, unreadable or unsuitable."""


class StructureError(SymDiagError):
    """A structure cannot be evaluated (empty, non-finite, degenerate cell, ...)."""


class RotationError(SymDiagError):
    """A matrix passed as an O(3) operation is not orthogonal or has a bad shape."""


class ModelEvaluationError(SymDiagError):
    """The model itself refused or failed on a structure."""


class NonFiniteOutputError(ModelEvaluationError):
    """The model returned NaN or infinite values (an MD run counts this as a failure
    of the variant, not as an error)."""


class UsageError(SymDiagError):
    """A command-line or keyword argument has a bad value (reported in one line, exit 2)."""
