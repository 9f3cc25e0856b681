"""Any model -> rotated-frame samples: the backend selector.

Every backend implements ONE interface, :class:`Evaluator`: ``chunks(structure,
rotations, ...)`` yields ``(start, stop, {name: float64 array})`` in the rotated frame
(names ``energy``, ``forces``, ``stress``, ``energies``, ``direct_forces``,
``direct_stress``), each chunk checked finite. :func:`as_evaluator` picks the backend
for whatever the user holds:

- a metatomic ``.pt`` path, ``AtomisticModel`` or :class:`ModelHandle` ->
  :class:`MetatomicEvaluator` (batched, one shared neighbour list);
- a TorchSim ``ModelInterface`` (Orb, MACE, metatomic-torchsim, Lennard-Jones, a
  user's) -> :class:`TorchSimEvaluator` (the copies are one batch of systems);
- an ASE calculator -> :class:`ASEEvaluator` (one call per operation).

Backends return samples and nothing else; the drivers of :mod:`ase_symdiag.drivers`
evaluate through an Evaluator and hand the samples to the pure metrics of
:mod:`ase_symdiag.metrics`, which never evaluate a model themselves.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from ase_symdiag.backends.samples import Predictions, check_finite, join_chunks
from ase_symdiag.errors import ModelError, UsageError
from ase_symdiag.structures import Structure

Chunk = Tuple[int, int, Dict[str, np.ndarray]]


class Evaluator:
    """The interface every backend implements (see the module docstring).

    ``name``: how reports name the model; ``dtype``/``device``: strings for reports.
    """

    name: str = "model"
    dtype: str = "float64"
    device: str = "cpu"

    def check(self, structure: Structure) -> None:
        """Raise a :class:`~ase_symdiag.errors.SymDiagError` if ``structure`` cannot be evaluated."""

    def chunks(
        self,
        structure: Structure,
        rotations: np.ndarray,
        *,
        forces: bool = True,
        stress: bool = True,
        energies: bool = False,
        direct: bool = False,
        batch_size: Optional[int] = 16,
        chunk_atoms: Optional[int] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> Iterator[Chunk]:
        """Rotated-frame outputs of ``structure`` under ``rotations`` (K, 3, 3), a chunk at a time."""
        raise NotImplementedError

    def predictions(
        self,
        structure: Structure,
        rotations: np.ndarray,
        *,
        forces: bool = True,
        stress: bool = True,
        energies: bool = False,
        direct: bool = False,
        batch_size: Optional[int] = 16,
        progress: Optional[Callable[[int], None]] = None,
    ) -> Predictions:
        """All chunks of :meth:`chunks` joined into one checked :class:`Predictions`."""
        joined = join_chunks(self.chunks(structure, rotations, forces=forces, stress=stress, energies=energies,
                                         direct=direct, batch_size=batch_size, progress=progress))
        return check_finite(Predictions(**joined), label=structure.label or "structure", source=self.name)


class MetatomicEvaluator(Evaluator):
    """A metatomic model (:class:`~ase_symdiag.backends.metatomic.model.ModelHandle`),
    batched by :func:`~ase_symdiag.backends.metatomic.evaluation.evaluate_chunks`.
    ``inputs``/``uncertainty`` of that function are metatomic-only extras."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.name = handle.source
        self.dtype = str(handle.dtype).replace("torch.", "")
        self.device = str(handle.device)

    def check(self, structure: Structure) -> None:
        self.handle.check_types(structure.numbers, structure.label)

    def chunks(self, structure, rotations, *, forces=True, stress=True, energies=False, direct=False,
               batch_size=16, chunk_atoms=None, progress=None, inputs: Optional[Mapping] = None,
               uncertainty: bool = False) -> Iterator[Chunk]:
        from ase_symdiag.backends.metatomic.evaluation import evaluate_chunks

        return evaluate_chunks(
            self.handle, structure, rotations, forces=forces, stress=stress, energies=energies, direct=direct,
            batch_size=batch_size, chunk_atoms=chunk_atoms, progress=progress, inputs=inputs,
            uncertainty=uncertainty,
        )


class TorchSimEvaluator(Evaluator):
    """Any TorchSim ``ModelInterface``: the rotated copies are one batch of systems
    (:func:`~ase_symdiag.backends.torchsim.torchsim_chunks`)."""

    def __init__(self, model) -> None:
        from ase_symdiag.backends.torchsim import model_name

        self.model = model
        self.name = model_name(model)
        self.dtype = str(model.dtype).replace("torch.", "")
        self.device = str(model.device)

    def chunks(self, structure, rotations, *, forces=True, stress=True, energies=False, direct=False,
               batch_size=16, chunk_atoms=None, progress=None) -> Iterator[Chunk]:
        from ase_symdiag.backends.torchsim import torchsim_chunks

        return torchsim_chunks(
            self.model, structure, rotations, forces=forces, stress=stress, energies=energies, direct=direct,
            batch_size=batch_size, chunk_atoms=chunk_atoms, progress=progress,
        )


class ASEEvaluator(Evaluator):
    """Any ASE calculator, one call per operation
    (:func:`~ase_symdiag.backends.ase.calculator_predictions`). The calculator sees a
    copy of ``template`` (an ``ase.Atoms`` with the same atomic numbers: its ``info``,
    e.g. a total charge or spin, and per-atom arrays travel unrotated) or, without
    one, an ``Atoms`` with the structure's numbers, positions, cell and pbc only."""

    def __init__(self, calculator, template=None) -> None:
        from ase_symdiag.backends.ase import calculator_name

        self.calculator = calculator
        self.template = template
        self.name = calculator_name(calculator)
        parameters = getattr(calculator, "parameters", None) or {}
        self.dtype = str(parameters.get("dtype", "float64"))
        self.device = str(parameters.get("device", "cpu"))

    def chunks(self, structure, rotations, *, forces=True, stress=True, energies=False, direct=False,
               batch_size=16, chunk_atoms=None, progress=None) -> Iterator[Chunk]:
        from ase import Atoms

        from ase_symdiag.backends.ase import calculator_predictions

        template = self.template
        if template is not None and np.array_equal(template.numbers, structure.numbers):
            atoms = template.copy()
            atoms.calc = None
            atoms.set_cell(structure.cell, scale_atoms=False)
            atoms.positions = structure.positions
        else:
            atoms = Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell,
                          pbc=structure.pbc)
        rotations = np.asarray(rotations, dtype=np.float64)
        for k in range(len(rotations)):
            one = calculator_predictions(self.calculator, atoms, rotations[k:k + 1], label=structure.label)
            chunk = {"energy": one.energy}
            if forces and one.forces is not None:
                chunk["forces"] = one.forces
            if stress and one.stress is not None:
                chunk["stress"] = one.stress
            if progress is not None:
                progress(1)
            yield k, k + 1, chunk


def as_evaluator(model, *, device: Optional[str] = None, dtype: Optional[str] = None) -> Evaluator:
    """The :class:`Evaluator` of ``model``: an Evaluator, a metatomic path /
    ``AtomisticModel`` / ``ModelHandle``, a TorchSim ``ModelInterface`` or an ASE
    calculator. ``device``/``dtype`` apply to metatomic models only (a TorchSim model
    or an ASE calculator runs as it was built; passing them is a :class:`UsageError`).
    Anything else is a :class:`ModelError`."""
    from ase_symdiag.backends.ase import is_ase_calculator
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.backends.torchsim import is_torchsim_model

    if isinstance(model, Evaluator):
        return model
    if isinstance(model, ModelHandle):
        return MetatomicEvaluator(model)
    if is_torchsim_model(model) or is_ase_calculator(model):
        if device is not None or dtype is not None:
            raise UsageError(
                f"device/dtype apply to metatomic models; build the {type(model).__name__} on the device "
                "and in the dtype you want"
            )
        return TorchSimEvaluator(model) if is_torchsim_model(model) else ASEEvaluator(model)
    if isinstance(model, (str, os.PathLike)) or hasattr(model, "capabilities"):
        return MetatomicEvaluator(ModelHandle.load(model, device=device, dtype=dtype))
    raise ModelError(
        f"expected a metatomic model (.pt file, AtomisticModel), a TorchSim ModelInterface or an ASE "
        f"calculator, got {type(model).__name__}"
    )


__all__ = [
    "ASEEvaluator",
    "Evaluator",
    "MetatomicEvaluator",
    "TorchSimEvaluator",
    "as_evaluator",
]
