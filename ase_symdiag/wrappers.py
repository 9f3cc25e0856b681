"""Symmetrized and corrected versions of ANY model, as an ASE calculator.

:class:`SymmetrizedCalculator` wraps, by composition, whatever
:func:`ase_symdiag.backends.dispatch.as_evaluator` takes: an ASE calculator (ORB's,
MACE's, EMT, a user's: one call per operation), a TorchSim ``ModelInterface`` (Orb,
MACE, ...: all rotated copies batched as systems of one state, chunked) or a
metatomic model (batched, shared neighbour list; :class:`~ase_symdiag.SymDiagCalculator`
adds metatomic-only options). metatomic-ase's ``SymmetrizedCalculator`` accepts only a
``MetatomicCalculator`` (wrapping ``ORBCalculator`` fails with ``AttributeError``);
this one needs nothing of the inner model but energy and forces (and stress for
periodic structures).

Averaging (docs/methods.md §2) and corrections (§6) are the library's single
implementations: :func:`~ase_symdiag.drivers.symmetrize.symmetrized_prediction` and
:mod:`ase_symdiag.corrections.registry`. Results: ``energy``, ``free_energy`` (eV),
``forces`` (eV/Å), ``stress`` (Voigt, eV/Å^3, fully periodic structures) and, when
averaged, the rotational spreads ``energy_std``, ``forces_std``, ``stress_std``.
"""

from __future__ import annotations

import threading
from typing import List, Optional, Sequence

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ase_symdiag.structures import from_atoms


class SymmetrizedCalculator(Calculator):
    """ASE calculator over ``inner`` (an ASE calculator, a TorchSim model or a
    metatomic model), averaged over ``symmetrize`` (a degree such as ``3``, a
    quadrature name such as ``"O"`` or ``"lebedev:3"``, an
    :class:`~ase_symdiag.o3.quadrature.O3Quadrature`; ``None``: no averaging) and
    post-processed by ``corrections`` (objects or names: ``"net_force"``,
    ``"net_torque"``, ``"point_group"``, ``"stochastic"``, ...), in that order.

    ``batch_size``/``chunk_atoms``: rotated copies per model call and the atom budget
    of one call (batched backends). Keyword arguments are exactly these plus ASE's
    ``label``, ``atoms`` and ``directory``; a typo is a ``TypeError``. One lock
    serializes calls from several threads.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    default_parameters: dict = {}

    def __init__(
        self,
        inner,
        *,
        symmetrize=None,
        corrections: Sequence = (),
        batch_size: int = 16,
        chunk_atoms: Optional[int] = None,
        label: Optional[str] = None,
        atoms=None,
        directory: str = ".",
    ) -> None:
        from ase_symdiag.backends.dispatch import as_evaluator
        from ase_symdiag.corrections.registry import resolve_corrections
        from ase_symdiag.errors import UsageError
        from ase_symdiag.o3.quadrature import resolve_quadrature

        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        if chunk_atoms is not None and chunk_atoms < 1:
            raise UsageError(f"chunk_atoms must be >= 1, got {chunk_atoms}")
        self._lock = threading.RLock()
        super().__init__(label=label, atoms=None, directory=directory)
        self.inner = inner
        self.evaluator = as_evaluator(inner)
        self.quadrature = resolve_quadrature(symmetrize)
        self.corrections = resolve_corrections(corrections)
        self.batch_size = int(batch_size)
        self.chunk_atoms = chunk_atoms
        self.parameters.update(
            model=self.evaluator.name, dtype=self.evaluator.dtype, device=self.evaluator.device,
            symmetrize=None if self.quadrature is None else self.quadrature.name,
        )
        if self.corrections:
            self.parameters["corrections"] = [getattr(c, "name", repr(c)) for c in self.corrections]
        if atoms is not None:
            atoms.calc = self

    def set(self, **kwargs) -> dict:
        """Refuse to change parameters after construction (``TypeError``): make a new calculator."""
        if kwargs:
            raise TypeError(
                f"SymmetrizedCalculator parameters are fixed when it is made; got set({', '.join(sorted(kwargs))}=...)"
            )
        return {}

    @property
    def description(self) -> str:
        """The inner model and what is done to its outputs, e.g. ``OrbModel [symmetrize=O; corrections=net_force]``."""
        parts = []
        if self.quadrature is not None:
            parts.append(f"symmetrize={self.quadrature.name}")
        if self.corrections:
            parts.append("corrections=" + "+".join(self.parameters["corrections"]))
        return self.evaluator.name + (f" [{'; '.join(parts)}]" if parts else "")

    def get_property(self, name, atoms=None, allow_calculation=True):
        with self._lock:
            return super().get_property(name, atoms, allow_calculation)

    def calculate(self, atoms=None, properties: List[str] = ("energy",), system_changes: List[str] = all_changes) -> None:
        with self._lock:
            self._calculate(atoms, properties, system_changes)

    def _calculate(self, atoms, properties, system_changes) -> None:
        from ase_symdiag.backends.dispatch import ASEEvaluator
        from ase_symdiag.corrections.registry import correct_prediction, prepare_evaluation
        from ase_symdiag.drivers.symmetrize import symmetrized_prediction
        from ase_symdiag.o3.quadrature import identity_quadrature
        from ase_symdiag.o3.transforms import voigt_from_tensor

        super().calculate(atoms, properties, system_changes)
        structure = from_atoms(self.atoms, label=self.atoms.get_chemical_formula())
        if "stress" in properties and not structure.periodic:
            raise PropertyNotImplementedError(
                f"stress is only defined for structures periodic in all directions (pbc={structure.pbc.tolist()})"
            )
        evaluator = self.evaluator
        if isinstance(evaluator, ASEEvaluator):  # the inner calculator sees these atoms' info and arrays
            evaluator = ASEEvaluator(evaluator.calculator, template=self.atoms)
        evaluator.check(structure)
        options = dict(forces=True, stress=True, energies=False, direct=False)
        quadrature, own = self.quadrature, False
        if self.corrections:  # a correction may choose the rotations or ask for more outputs
            quadrature, own, options = prepare_evaluation(self.corrections, structure, quadrature, options)
        averaged = symmetrized_prediction(
            evaluator, structure, quadrature if quadrature is not None else identity_quadrature(),
            batch_size=self.batch_size, chunk_atoms=self.chunk_atoms, keep_samples=False, **options,
        )
        mean = averaged.mean
        std = None if (own or quadrature is None) else averaged.std
        if self.corrections:
            mean = correct_prediction(self.corrections, mean, structure, self.atoms.get_masses(), "forces", "stress")
        for name in ("energy", "forces", "stress"):
            if name not in mean:
                continue
            value = np.asarray(mean[name], dtype=np.float64)
            if name == "stress":
                value = voigt_from_tensor(value)
            self.results[name] = float(value) if name == "energy" else value
            if std is not None:
                spread = std["stress:voigt"] if name == "stress" else std[name]
                self.results[name + "_std"] = float(spread) if name == "energy" else np.asarray(spread)
        self.results["free_energy"] = self.results["energy"]


__all__ = ["SymmetrizedCalculator"]
