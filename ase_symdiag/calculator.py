"""ASE calculator over any metatomic model, with the equivariance check attached."""

from __future__ import annotations

from typing import Literal, Optional, Sequence, Union

import numpy as np
from ase.calculators.calculator import PropertyNotImplementedError

from ase_symdiag.calculator_base import AveragingCalculator
from ase_symdiag.corrections.registry import correct_prediction, prepare_evaluation
from ase_symdiag.backends.metatomic.evaluation import evaluate
from ase_symdiag.backends.metatomic.inputs import input_arrays
from ase_symdiag.drivers.symmetrize import symmetrized_prediction
from ase_symdiag.metrics.symmetrize import back_rotated
from ase_symdiag.backends.metatomic.model import NC_FORCE, NC_STRESS, ModelHandle
from ase_symdiag.errors import ModelError, UsageError
from ase_symdiag.structures import from_atoms


class SymDiagCalculator(AveragingCalculator):
    """ASE calculator for a metatomic model (``.pt`` file or AtomisticModel).

    Results: ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å, conservative,
    ``-dE/dx`` by autograd), ``stress`` (Voigt 6: xx, yy, zz, yz, xz, xy, eV/Å^3,
    fully periodic structures only) and ``energies`` (per-atom, eV) when the model
    has per-atom energies. With ``non_conservative=True`` (or ``"forces"`` /
    ``"stress"``) forces and/or stress come from the model's direct heads instead.

    ``symmetrize``: average over an O(3) quadrature (a degree such as ``3``, or
    ``"lebedev:3"``, ``"grid:3"``, ``"O"``, ``"I"``, or an
    :class:`~ase_symdiag.o3.quadrature.O3Quadrature`; see
    :func:`~ase_symdiag.o3.quadrature.resolve_quadrature`). Forces are back-rotated with
    ``F(Rx) R`` and stress with ``R^T S(Rx) R`` before the weighted average; the
    rotational standard deviations go to ``results["energy_std"]``,
    ``["forces_std"]``, ``["stress_std"]`` (Voigt) and ``["energies_std"]``. All rotated
    copies share one neighbour list; they run in chunks of at most ``batch_size``
    copies and about ``chunk_atoms`` atoms (default
    :data:`~ase_symdiag.backends.metatomic.evaluation.CHUNK_ATOMS`) per model call, and each chunk is
    folded into running sums before the next one is built, so peak memory is that of
    one chunk whatever the number of operations (a 10,000-atom structure runs one copy
    at a time, within 1.5x of a plain evaluation's peak).

    ``corrections``: exact constraints applied after evaluation/averaging, in order
    (objects or names such as ``"net_force"``, ``"net_torque"``, ``"point_group"``,
    ``"stochastic"``; see :mod:`ase_symdiag.corrections`).

    ``variant``: which ``energy/<variant>`` output of a multi-variant model to use
    (upet/PET-MAD style; direct heads and ``energy_uncertainty`` follow it);
    ``device``, ``dtype`` and ``variant`` apply to a
    :class:`~ase_symdiag.backends.metatomic.model.ModelHandle` too (a new handle of
    its model where they differ from its own; the given handle is not changed);
    ``extensions_directory``: where the model's TorchScript extensions are. Inputs the
    model requests (masses, charges, velocities, spin multiplicity, ...) are read from
    the atoms as :class:`metatomic_ase.MetatomicCalculator` does, vectors turned with
    each rotated copy; a model's ``energy_uncertainty`` goes to
    ``results["energy_uncertainty"]`` (eV).

    Everything is computed at once and cached by ASE's ``check_state`` until the
    atoms change.

    Keyword arguments are exactly those above, plus ASE's ``label``, ``atoms`` and
    ``directory``; any other (a typo such as ``symmetrise=3``) is a ``TypeError``, and
    so is ``set()`` of any parameter: a calculator's model and averaging are fixed
    when it is made (make a new one instead).

    Threads: one calculator may be shared between threads. ``calculate`` and every
    ``get_property`` (``atoms.get_forces()``, ...) hold one lock, so concurrent calls
    are *serialized* (they do not run in parallel) and each returns the results of
    its own atoms. ASE keeps one ``atoms``/``results`` cache per calculator, so
    threads working on different structures recompute on every switch: give each
    thread its own calculator for speed.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]
    default_parameters: dict = {}

    def __init__(
        self,
        model,
        *,
        device: Optional[str] = None,
        dtype: Optional[Literal["float32", "float64"]] = None,
        non_conservative: Union[bool, Literal["forces", "stress"]] = False,
        symmetrize=None,
        batch_size: int = 16,
        chunk_atoms: Optional[int] = None,
        corrections: Sequence = (),
        variant: Optional[str] = None,
        extensions_directory: Optional[str] = None,
        label: Optional[str] = None,
        atoms=None,
        directory: str = ".",
    ) -> None:
        from ase_symdiag.corrections.registry import resolve_corrections
        from ase_symdiag.o3.quadrature import resolve_quadrature

        if non_conservative not in (True, False, "forces", "stress"):
            raise UsageError(
                f"non_conservative must be True, False, 'forces' or 'stress', got {non_conservative!r}"
            )
        super().__init__(label=label, directory=directory)
        # a ModelHandle is re-loaded where device/dtype/variant differ from its own
        self.handle = ModelHandle.load(
            model, device=device, dtype=dtype, variant=variant, extensions_directory=extensions_directory
        )
        direct_forces = non_conservative in (True, "forces")
        direct_stress = non_conservative in (True, "stress")
        if direct_forces and not self.handle.has_direct_forces:
            raise ModelError(
                f"non_conservative={non_conservative!r}: model '{self.handle.source}' has no "
                f"'{NC_FORCE}' output"
            )
        if direct_stress and not self.handle.has_direct_stress:
            raise ModelError(
                f"non_conservative={non_conservative!r}: model '{self.handle.source}' has no "
                f"'{NC_STRESS}' output"
            )
        self._direct_forces = direct_forces
        self._direct_stress = direct_stress
        self.quadrature = resolve_quadrature(symmetrize)
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        if chunk_atoms is not None and chunk_atoms < 1:
            raise UsageError(f"chunk_atoms must be >= 1, got {chunk_atoms}")
        self.chunk_atoms = chunk_atoms
        self.parameters.update(
            model=self.handle.source,
            device=str(self.handle.device),
            dtype=str(self.handle.dtype).replace("torch.", ""),
            non_conservative=non_conservative,
            symmetrize=None if self.quadrature is None else self.quadrature.name,
            variant=self.handle.variant,
        )
        self.corrections = resolve_corrections(corrections)
        if self.corrections:
            self.parameters["corrections"] = [getattr(c, "name", repr(c)) for c in self.corrections]
        if atoms is not None:
            atoms.calc = self

    @property
    def plain(self) -> bool:
        """True when the results are the bare model's conservative outputs (no
        averaging, no corrections, no direct heads): the batched check measures them."""
        return self.quadrature is None and not self.corrections and not (self._direct_forces or self._direct_stress)

    @property
    def description(self) -> str:
        """The model and what is done to its outputs, e.g. ``m.pt [symmetrize=O; corrections=net_force]``."""
        direct = self._direct_forces or self._direct_stress
        return self._describe(self.handle.source, [f"non_conservative={self.parameters['non_conservative']}"] if direct else [])

    def _calculate(self, atoms, properties, system_changes) -> None:
        structure = from_atoms(self.atoms)
        if "stress" in properties and not structure.periodic:
            raise PropertyNotImplementedError(
                f"stress is only defined for structures periodic in all directions "
                f"(pbc={structure.pbc.tolist()})"
            )
        options = dict(
            forces=not self._direct_forces,
            stress=not self._direct_stress,
            energies=True,
            direct=self._direct_forces or self._direct_stress,
        )
        # the inputs the model requests (masses, charges, velocities, ...) from these atoms
        inputs = input_arrays(self.handle, self.atoms) if self.handle.requested_inputs else None
        quadrature, own = self.quadrature, False
        if self.corrections:  # a correction may choose the rotations or ask for more outputs
            quadrature, own, options = prepare_evaluation(self.corrections, structure, quadrature, options)
        if quadrature is None:
            prediction = evaluate(self.handle, structure, inputs=inputs, uncertainty=True, **options)
            values = back_rotated(prediction, np.eye(3)[None])
            mean = {name: value[0] for name, value in values.items()}
            std = None
        else:
            averaged = symmetrized_prediction(
                self.handle, structure, quadrature, batch_size=self.batch_size, chunk_atoms=self.chunk_atoms,
                keep_samples=False, inputs=inputs, uncertainty=True, **options
            )
            mean, std = averaged.mean, (None if own else averaged.std)
        forces_key = "direct_forces" if self._direct_forces else "forces"
        stress_key = "direct_stress" if self._direct_stress else "stress"
        if self.corrections:  # post-process the (averaged) outputs; stress is still 3x3
            mean = correct_prediction(
                self.corrections, mean, structure, self.atoms.get_masses(), forces_key, stress_key
            )
        self._store(mean, std, (("energy", "energy"), ("energies", "energies"), ("forces", forces_key),
                                ("stress", stress_key)))
        if "energy_uncertainty" in mean:  # the model's own uncertainty output, eV
            self.results["energy_uncertainty"] = float(mean["energy_uncertainty"])

    def check_equivariance(
        self,
        structures=None,
        *,
        n_rotations: int = 8,
        seed: Optional[int] = 0,
        rotations=None,
        include_inversion: bool = True,
        direct: bool = True,
        batch_size: int = 16,
        progress: bool = False,
    ):
        """The equivariance check of what this calculator returns.

        ``structures`` (Atoms or a list; default: the calculator's current atoms).
        A plain calculator (no averaging, corrections or direct heads) is checked by
        the batched :func:`ase_symdiag.check_equivariance` of its model (``direct``:
        the model's direct heads too); otherwise every rotated copy goes through this
        calculator (:func:`ase_symdiag.drivers.equivariance.calculator_equivariance`), so the
        averaged or corrected outputs are what is measured. Same operations as
        ``check_equivariance`` for the same ``n_rotations``, ``seed``, ``rotations``.
        """
        from ase_symdiag.drivers.equivariance import calculator_equivariance, check_equivariance
        from ase_symdiag.metrics.equivariance import check_operations

        if structures is None:
            with self._lock:  # another thread's calculate may be replacing self.atoms
                current = self.atoms
                if current is None:
                    raise UsageError("no structures given and the calculator has no atoms yet")
                structures = current.copy()
        if self.plain:
            return check_equivariance(
                self.handle, structures, n_rotations=n_rotations, seed=seed, rotations=rotations,
                include_inversion=include_inversion, direct=direct, batch_size=batch_size, progress=progress,
            )
        items = [structures] if hasattr(structures, "get_positions") else list(structures)
        labelled = [(f"{i}:{a.info.get('name') or a.get_chemical_formula()}", a) for i, a in enumerate(items)]
        operations = check_operations(n_rotations, seed, rotations, include_inversion)
        report, _ = calculator_equivariance(
            self, labelled, operations, seed=seed, dtype=self.parameters["dtype"], device=self.parameters["device"]
        )
        return report
