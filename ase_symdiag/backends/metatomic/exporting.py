"""What every export (symmetrized and corrected) shares: the model it wraps, loaded in
the dtype asked for, and a save that never leaves a broken file.

:func:`save_checked` writes the export to a temporary file in the target folder,
loads that file back and evaluates it once through
:class:`metatomic_ase.MetatomicCalculator` (``check_consistency=True``: the declared
dtype, units and outputs are checked) on a small molecule of the model's atomic
types, and only then renames it to the target: a file that cannot be loaded or run
is never left on disk, and the failure is a one-line :class:`~ase_symdiag.errors.SymDiagError`.
"""

from __future__ import annotations

import pathlib
from typing import Optional

import numpy as np

from ase_symdiag.errors import ModelError, ModelEvaluationError

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
    from ase_symdiag.backends.metatomic.model import ENERGY, ModelHandle, _load_file, variants_of

    source = "<object>"
    if isinstance(model, (str, pathlib.PurePath)):
        source = str(model)
        model = _load_file(model)
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
            probe(tmp)
        except ModelEvaluationError as error:
            raise ModelEvaluationError(f"the export to '{path}' was not written: {error}") from None
        except Exception as error:  # noqa: BLE001 (any failure of the saved file means a broken export)
            raise ModelEvaluationError(
                f"the export to '{path}' was not written: loaded back, it fails on a test molecule: {_first_line(error)}"
            ) from None

    atomic_write(str(path), writer)


def probe(path: str) -> None:
    """Load the saved model ``path`` with metatomic-ase and evaluate its energy and
    forces (and direct forces when declared) on a four-atom molecule of its atomic
    types; raise :class:`ModelEvaluationError` for non-finite values."""
    from ase import Atoms
    from metatomic_ase import MetatomicCalculator

    calculator = MetatomicCalculator(path, check_consistency=True, do_gradients_with_energy=False)
    capabilities = calculator._model.capabilities()
    types = [int(t) for t in capabilities.atomic_types if 0 < int(t) < 119]
    if not types:
        raise ModelEvaluationError("its atomic types are not chemical elements: it cannot be tested on a molecule")
    atoms = Atoms(numbers=[types[i % len(types)] for i in range(len(PROBE_POSITIONS))], positions=PROBE_POSITIONS)
    atoms.set_velocities(PROBE_VELOCITIES)
    for name, option in calculator._model.requested_inputs(use_new_names=True).items():
        if name.startswith("ase::info::"):
            atoms.info[name[len("ase::info::"):]] = 0.0
        elif name.startswith("ase::arrays::"):
            atoms.arrays[name[len("ase::arrays::"):]] = np.zeros(len(atoms))
    atoms.calc = calculator
    values = {"energy": np.array(atoms.get_potential_energy()), "forces": atoms.get_forces()}
    if "non_conservative_force" in capabilities.outputs:
        direct = atoms.copy()
        direct.calc = MetatomicCalculator(
            path, check_consistency=True, do_gradients_with_energy=False, non_conservative="forces"
        )
        values["direct forces"] = direct.get_forces()
    for name, value in values.items():
        if not np.all(np.isfinite(value)):
            raise ModelEvaluationError(f"loaded back, its {name} on a test molecule are not finite")


def _first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, or of its cause's when that names more."""
    for candidate in (error.__cause__, error):
        text = str(candidate).strip() if candidate is not None else ""
        if text:
            return text.splitlines()[0]
    return type(error).__name__
