"""The one exception of the MD subpackage (its own module: every other md module raises it)."""

from __future__ import annotations

from ase_symdiag.errors import SymDiagError


class MDError(SymDiagError):
    """A molecular-dynamics run cannot be set up (bad variant, ensemble, options), or a
    step raised an error that is not an instability (a bug, a model that raises)."""


def step_error(variant: str, step: int, error: BaseException) -> MDError:
    """The one-line error of a step that raised ``error``: not counted as an MD
    failure (only non-finite outputs and the failure thresholds are), but reported,
    naming the variant and the step."""
    from ase_symdiag.backends.metatomic.evaluation import model_error_message

    message = " ".join(model_error_message(error).split())  # the useful line of a TorchScript traceback
    return MDError(
        f"variant '{variant}' raised an error at step {step} (an error, not an MD instability): "
        f"{type(error).__name__}: {message}"
    )
