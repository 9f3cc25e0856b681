"""The symmetry-breaking spectrum of a model (docs/methods.md §3): evaluate, then decompose.

Any form of model (:func:`~ase_symdiag.backends.dispatch.as_evaluator`) is evaluated
on a quadrature and at check orientations; the samples go to the pure
:func:`ase_symdiag.metrics.spectrum.spectrum_from_samples`.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from ase_symdiag.backends.dispatch import as_evaluator
from ase_symdiag.errors import UsageError
from ase_symdiag.drivers.progress import progress_bar
from ase_symdiag.drivers.symmetrize import symmetrized_prediction
from ase_symdiag.metrics.spectrum import N_CHECK, StructureSpectrum, spectrum_from_samples, spectrum_quadrature
from ase_symdiag.metrics.symmetrize import SymmetrizedPrediction, back_rotated
from ase_symdiag.o3.quadrature import O3Quadrature, haar_random
from ase_symdiag.structures import Structure, from_atoms


def structure_spectrum(
    model,
    structure,
    lmax: int = 4,
    *,
    quadrature: Optional[O3Quadrature] = None,
    direct: bool = True,
    batch_size: int = 16,
    progress=None,
    n_check: Optional[int] = None,
    seed: Optional[int] = 0,
) -> Tuple[StructureSpectrum, SymmetrizedPrediction]:
    """The breaking spectrum of any model on ``structure`` (a ``Structure`` or an
    ``ase.Atoms``) up to ``lmax``
    (:func:`ase_symdiag.metrics.spectrum.spectrum_from_samples`): evaluated on
    ``quadrature`` (default the smallest exact to ``2 lmax``) and ``n_check``
    Haar-random check orientations (``seed``; half of them improper; default
    :data:`~ase_symdiag.metrics.spectrum.N_CHECK`), which measure what the channels
    ``<= lmax`` do not explain; ``n_check=0`` falls back to the variance over the
    quadrature, which cannot see breaking the quadrature does not resolve. Returns
    the spectrum and the :class:`~ase_symdiag.metrics.symmetrize.SymmetrizedPrediction`
    on the quadrature (its mean is the symmetrized prediction)."""
    if not isinstance(structure, Structure):  # an ase.Atoms
        structure = from_atoms(structure, label=structure.get_chemical_formula())
    n_check = N_CHECK if n_check is None else int(n_check)
    if n_check == 1 or n_check < 0:
        raise UsageError("n_check must be 0 or >= 2 (the standard error needs two orientations)")
    evaluator = as_evaluator(model)
    quadrature = spectrum_quadrature(lmax, quadrature)
    prediction = symmetrized_prediction(
        evaluator, structure, quadrature, energies=False, direct=direct, batch_size=batch_size, progress=progress
    )
    checks = {}
    if n_check:
        rotations = haar_random(n_check, seed, include_inversion=quadrature.include_inversion).rotations
        checked = evaluator.predictions(structure, rotations, direct=direct, batch_size=batch_size)
        checks = {name: (rotations, values) for name, values in back_rotated(checked, rotations).items()}
    return spectrum_from_samples(structure, prediction, lmax, checks), prediction


def measure_spectra(
    model: Any,
    structures: Sequence[Structure],
    *,
    lmax: int,
    batch_size: int = 16,
    n_check: int = N_CHECK,
    progress: bool = False,
) -> List[StructureSpectrum]:
    """The spectrum of ``model`` (any form :func:`ase_symdiag.backends.dispatch.as_evaluator`
    takes; channels ``lambda <= lmax``, both parities) of every structure, in
    order; ``n_check`` Haar-random orientations per structure measure what lies above
    ``lmax``; ``batch_size`` rotated copies per model call; ``progress``: a progress bar."""
    bar = progress_bar(len(structures), progress, desc="spectrum", unit="structure")
    spectra = []
    for structure in structures:
        spectrum, _ = structure_spectrum(model, structure, lmax=lmax, batch_size=batch_size, n_check=n_check)
        spectra.append(spectrum)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return spectra


__all__ = ["measure_spectra", "structure_spectrum"]
