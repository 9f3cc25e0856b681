"""Direct forces with a periodically refreshed conservative correction."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ase_symdiag.corrections.base import Correction, Outputs, copy_outputs
from ase_symdiag.errors import UsageError
from ase_symdiag.structures import Structure

__all__ = ["MixedForces"]


class MixedForces(Correction):
    """Direct forces with a conservative correction refreshed every ``every`` calls.

    For models with both a direct force head and an energy, used with
    ``non_conservative=True`` or ``"forces"``. On call ``k`` (counting calculations,
    0-based): if ``k % every == 0`` the calculator also computes the conservative
    forces by autograd, the correction stores ``delta = F_cons - F_direct`` and returns
    ``F_cons``; otherwise it returns ``F_direct + delta`` with the stored ``delta``
    (the "multiple time step" scheme users run: cheap direct forces at every step,
    backward pass every n-th step). ``every=1`` gives the conservative forces.

    Makes exact: nothing, between refreshes. The returned forces equal ``F_cons`` only
    on refresh calls; in between, the error is ``delta`` drift, i.e. the change of
    ``F_cons - F_direct`` since the last refresh, which grows with ``every * dt``. The
    held-difference scheme is not the impulse (RESPA) form, is not time-reversible and
    does not conserve energy exactly; it removes the *systematic* non-conservative
    part of the direct forces only to the extent that ``delta`` varies slowly. The
    energy and stress are not modified. Stateful; a change in the number of atoms
    forces a refresh (the counter is not reset).
    """

    name = "mixed_forces"

    def __init__(self, every: int = 10) -> None:
        if int(every) < 1:
            raise UsageError(f"MixedForces: every must be >= 1, got {every}")
        self.every = int(every)
        self.calls = 0
        self._delta: Optional[np.ndarray] = None  # (N, 3) eV/Å, F_cons - F_direct
        self._refresh = True

    def evaluation_options(self, options: dict, structure: Optional[Structure] = None) -> dict:
        """Ask for conservative forces on refresh calls (also advances the counter)."""
        if options.get("forces", True) or not options.get("direct", False):
            raise UsageError("MixedForces needs a calculator with non_conservative=True or 'forces'")
        stale = self._delta is None or (structure is not None and len(self._delta) != len(structure))
        self._refresh = self.calls % self.every == 0 or stale
        self.calls += 1
        return dict(options, forces=True) if self._refresh else dict(options)

    def __call__(self, outputs: Outputs, structure: Structure, masses: Optional[np.ndarray] = None) -> Outputs:
        out = copy_outputs(outputs)
        direct = out.get("forces")
        conservative = out.pop("conservative_forces", None)
        if direct is None:
            return out
        if conservative is not None:
            self._delta = conservative - direct
            out["forces"] = conservative
        elif self._delta is not None and self._delta.shape == direct.shape:
            out["forces"] = direct + self._delta
        else:  # called without the calculator's cooperation, or the atoms changed
            self._delta = None
        return out

    def __repr__(self) -> str:
        return f"MixedForces(every={self.every})"
