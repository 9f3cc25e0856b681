"""What every export (symmetrized and corrected) shares: the model it wraps, loaded in
the dtype asked for, and a save that never leaves a broken file.

:func:`save_checked` writes the export to a temporary file in the target folder,
loads that file back with metatomic and evaluates it once (energy, forces, direct
forces when declared; :func:`probe`) on a small molecule of the model's atomic
types, in the dtype it declares, and only then renames it to the target: a file
that cannot be loaded or run is never left on disk, and the failure is a one-line
:class:`~ase_symdiag.errors.SymDiagError`.
"""

from __future__ import annotations

import pathlib
from typing import Optional

import numpy as np

from ase_symdiag.errors import ModelError, ModelEvaluationError, SymDiagError

#: the probe molecule: four atoms 2.2-2.8 Å apart, no symmetry, Å
PROBE_POSITIONS = np.array([[0.0, 0.0, 0.0], [2.3, 0.1, -0.2], [0.4, 2.5, 0.3], [0.9, 0.8, 2.2]])
#: velocities of the probe's atoms (vector inputs are exercised), Å/fs in ASE units
PROBE_VELOCITIES = np.array([[0.01, -0.02, 0.005], [0.0, 0.01, 0.02], [-0.015, 0.0, 0.01], [0.005, 0.005, -0.01]])


def export_handle(model, dtype: Optional[str]):
    """The :class:`~ase_symdiag.backends.metatomic.model.ModelHandle` an export wraps:
    ``model`` (path, AtomisticModel or handle) in ``dtype`` ("float32"/"float64"; None:
    the handle's or the model's own), never the caller's model changed in place.

    Exports average and differentiate the plain ``energy`` output: a model with
    energy variants only, or a handle of a variant, is a :class:`ModelError`."""
    from ase_symdiag.backends.metatomic.model import ENERGY, ModelHandle, load_file, variants_of

    source = "<object>"
    if isinstance(model, (str, pathlib.PurePath)):
        source = str(model)
        model = load_file(model)
    if not isinstance(model, ModelHandle) and hasattr(model, "capabilities"):
        outputs = model.capabilities().outputs
        if ENERGY not in outputs and variants_of(ENERGY, outputs):
            raise ModelError(
                f"{source}: exports average the plain 'energy' output, and this model has only the energy "
                f"variants {', '.join(variants_of(ENERGY, outputs))}; export a model with a default 'energy'"
            )
    handle = ModelHandle.load(model, dtype=dtype)
    if source != "<object>":
        handle.source = source
    if handle.energy_key != ENERGY:
        raise ModelError(
            f"{handle.source}: exports average the plain 'energy' output, not the variant '{handle.energy_key}'"
        )
    return handle


def save_checked(exported, path) -> None:
    """Save the AtomisticModel ``exported`` to ``path``, atomically and only once it has
    been loaded back from disk and evaluated (see the module docstring); raises
    :class:`ModelError` (cannot be scripted or saved) or :class:`ModelEvaluationError`
    (saved but does not load or run, or gives non-finite values), leaving no file."""
    from ase_symdiag.report import atomic_write

    def writer(tmp: str) -> None:
        try:
            exported.save(tmp)
        except Exception as error:  # TorchScript errors are long; their cause names the problem
            raise ModelError(f"could not save the export to '{path}': {_first_line(error)}") from None
        try:
            probe(tmp, str(path))
        except SymDiagError as error:
            raise ModelEvaluationError(f"the export to '{path}' was not written: {error}") from None
        except Exception as error:  # noqa: BLE001 (any failure of the saved file means a broken export)
            raise ModelEvaluationError(
                f"the export to '{path}' was not written: loaded back, it fails on a test molecule: {_first_line(error)}"
            ) from None

    atomic_write(str(path), writer)


def probe(path: str, name: str) -> None:
    """Load the saved model ``path`` (named ``name`` in messages) through metatomic and
    evaluate its energy and forces (and direct forces when declared) on a four-atom
    molecule of its atomic types, with our own evaluation (metatomic-ase would print
    its GPU libraries' banners); non-finite values raise :class:`ModelEvaluationError`."""
    from ase import Atoms

    from ase_symdiag.backends.metatomic.evaluation import evaluate
    from ase_symdiag.backends.metatomic.inputs import input_arrays
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.structures import from_atoms

    handle = ModelHandle.load(path)
    handle.source = name
    types = [t for t in handle.atomic_types if 0 < t < 119]
    if not types:
        raise ModelEvaluationError("its atomic types are not chemical elements: it cannot be tested on a molecule")
    atoms = Atoms(numbers=[types[i % len(types)] for i in range(len(PROBE_POSITIONS))], positions=PROBE_POSITIONS)
    atoms.set_velocities(PROBE_VELOCITIES)
    for key in handle.requested_inputs:
        if key.startswith("ase::info::"):
            atoms.info[key[len("ase::info::"):]] = 0.0
        elif key.startswith("ase::arrays::"):
            atoms.arrays[key[len("ase::arrays::"):]] = np.zeros(len(atoms))
    inputs = input_arrays(handle, atoms) if handle.requested_inputs else None
    structure = from_atoms(atoms, label=f"a test molecule ({atoms.get_chemical_formula()})")
    evaluate(handle, structure, stress=False, direct=handle.has_direct_forces, inputs=inputs)


def _first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, or of its cause's when that names more."""
    for candidate in (error.__cause__, error):
        text = str(candidate).strip() if candidate is not None else ""
        if text:
            return text.splitlines()[0]
    return type(error).__name__
