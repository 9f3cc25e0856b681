"""drivers.spectrum.measure_spectra: the spectra of a model on several structures."""

import pytest

from ase_symdiag import ModelHandle
from ase_symdiag.drivers.spectrum import measure_spectra
from ase_symdiag.structures import from_atoms


@pytest.mark.parametrize("model, planted", [("equivariant_model", False), ("broken_model", True)])
def test_measure_spectra_finds_the_planted_channel(model, planted, crystal, cluster, request):
    """One spectrum per structure, in order; the planted quadrupole's energy breaking is
    all (lambda = 2, even), the equivariant model's is round-off."""
    structures = [from_atoms(crystal), from_atoms(cluster)]
    spectra = measure_spectra(ModelHandle.load(request.getfixturevalue(model)), structures, lmax=2, n_check=0)
    assert [s.n_atoms for s in spectra] == [len(crystal), len(cluster)]
    for spectrum in spectra:
        assert spectrum.lmax == 2
        energy = spectrum.outputs["energy"]
        total = sum(energy.breaking.values())
        if planted:
            assert total > 1e-8 and energy.breaking[(2, 1)] == pytest.approx(total, rel=1e-9)
        else:
            assert total < 1e-24 * max(energy.mean_square, 1.0)
