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

from typing import Optional, Sequence

from ase.calculators.calculator import PropertyNotImplementedError

from ase_symdiag.calculator_base import AveragingCalculator
from ase_symdiag.structures import from_atoms


class SymmetrizedCalculator(AveragingCalculator):
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
        super().__init__(label=label, directory=directory)
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

    @property
    def description(self) -> str:
        """The inner model and what is done to its outputs, e.g. ``OrbModel [symmetrize=O; corrections=net_force]``."""
        return self._describe(self.evaluator.name)

    def _calculate(self, atoms, properties, system_changes) -> None:
        from ase_symdiag.backends.dispatch import ASEEvaluator
        from ase_symdiag.corrections.registry import correct_prediction, prepare_evaluation
        from ase_symdiag.drivers.symmetrize import symmetrized_prediction
        from ase_symdiag.o3.quadrature import identity_quadrature

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
        self._store(mean, std, (("energy", "energy"), ("forces", "forces"), ("stress", "stress")))


__all__ = ["SymmetrizedCalculator"]
