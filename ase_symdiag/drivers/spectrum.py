"""The symmetry-breaking spectra of a model on several structures (docs/methods.md §3)."""

from __future__ import annotations

from typing import Any, List, Sequence

from ase_symdiag.metrics.spectrum import N_CHECK, StructureSpectrum, structure_spectrum
from ase_symdiag.structures import Structure


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
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="spectrum", unit="structure", total=len(structures), leave=False)
    spectra = []
    for structure in structures:
        spectrum, _ = structure_spectrum(model, structure, lmax=lmax, batch_size=batch_size, n_check=n_check)
        spectra.append(spectrum)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return spectra
