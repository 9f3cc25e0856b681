"""The one exception of the MD subpackage (its own module: every other md module raises it)."""

from __future__ import annotations

from ase_symdiag.errors import SymDiagError


class MDError(SymDiagError):
    """A molecular-dynamics run cannot be set up (bad variant, ensemble, options)."""
