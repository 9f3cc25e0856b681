"""What the ASE calculators of ase-symdiag share: :class:`AveragingCalculator`, the base
of :class:`~ase_symdiag.calculator.SymDiagCalculator` (metatomic models) and
:class:`~ase_symdiag.wrappers.SymmetrizedCalculator` (any model). No model library is
imported here."""

from __future__ import annotations

import threading
from typing import List, Optional, Sequence

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ase_symdiag.o3.transforms import voigt_from_tensor


class AveragingCalculator(Calculator):
    """What the ASE calculators of ase-symdiag share (:class:`SymDiagCalculator`,
    :class:`~ase_symdiag.wrappers.SymmetrizedCalculator`): parameters fixed at
    construction, every calculation and read of ``results`` under one lock, a
    ``description`` naming the model and what is done to its outputs, and one way of
    writing averaged outputs into ``results``."""

    def __init__(self, *, label: Optional[str], directory: str) -> None:
        self._lock = threading.RLock()
        super().__init__(label=label, atoms=None, directory=directory)

    def set(self, **kwargs) -> dict:
        """Refuse to change parameters after construction (``TypeError``): ASE's
        ``set`` would store any key, typos included, and change nothing."""
        if kwargs:
            raise TypeError(
                f"{type(self).__name__} parameters are fixed when it is made; "
                f"got set({', '.join(sorted(kwargs))}=...): make a new calculator"
            )
        return {}

    def _describe(self, model: str, extra: Sequence[str] = ()) -> str:
        """``model [symmetrize=Q; corrections=a+b; extra...]`` (no brackets when plain)."""
        parts = []
        if self.quadrature is not None:
            parts.append(f"symmetrize={self.quadrature.name}")
        if self.corrections:
            parts.append("corrections=" + "+".join(self.parameters["corrections"]))
        parts.extend(extra)
        return model + (f" [{'; '.join(parts)}]" if parts else "")

    def get_property(self, name, atoms=None, allow_calculation=True):
        """ASE's ``get_property`` under the calculator's lock (state check, calculation
        and the read of ``results`` happen together)."""
        with self._lock:
            return super().get_property(name, atoms, allow_calculation)

    def calculate(
        self,
        atoms=None,
        properties: List[str] = ("energy",),
        system_changes: List[str] = all_changes,
    ) -> None:
        with self._lock:
            Calculator.calculate(self, atoms, properties, system_changes)  # sets self.atoms
            self._calculate(atoms, properties, system_changes)

    def _calculate(self, atoms, properties, system_changes) -> None:
        """Fill ``results`` for ``self.atoms`` (already set, under the lock)."""
        raise NotImplementedError

    def _store(self, mean: dict, std: Optional[dict], keys: Sequence[tuple]) -> None:
        """Write ``mean[key]`` (and ``std[key]`` as ``<name>_std``) into ``results[name]``
        for each ``(name, key)``: energy as a float, stress as Voigt (eV/Å^3; its spread
        is that of the Voigt components, ``std[key + ":voigt"]``); ``free_energy`` =
        ``energy``."""
        for name, key in keys:
            if key not in mean:
                continue
            value = np.asarray(mean[key], dtype=np.float64)
            if name == "stress":
                value = voigt_from_tensor(value)
            self.results[name] = float(value) if name == "energy" else value
            if std is not None:
                spread = std[key + ":voigt"] if name == "stress" else std[key]
                self.results[name + "_std"] = float(spread) if name == "energy" else np.asarray(spread)
        self.results["free_energy"] = self.results["energy"]


__all__ = ["AveragingCalculator"]
