"""CUDA: the same numbers on the GPU (skipped without a CUDA device)."""

import numpy as np
import pytest
import torch

from ase_symdiag import SymDiagCalculator, check_equivariance

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.mark.parametrize("symmetrize", [None, "O"])
def test_cuda_matches_cpu(broken_model, crystal, symmetrize):
    cpu, gpu = crystal.copy(), crystal.copy()
    cpu.calc = SymDiagCalculator(broken_model, device="cpu", symmetrize=symmetrize)
    gpu.calc = SymDiagCalculator(broken_model, device="cuda", symmetrize=symmetrize)
    assert gpu.calc.handle.device.type == "cuda"
    assert gpu.get_potential_energy() == pytest.approx(cpu.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(gpu.get_forces(), cpu.get_forces(), atol=1e-10)
    np.testing.assert_allclose(gpu.get_stress(), cpu.get_stress(), atol=1e-12)


def test_cuda_float32_check(equivariant_model, crystal):
    report = check_equivariance(equivariant_model, crystal, n_rotations=4, device="cuda", dtype="float32")
    assert report.device.startswith("cuda")
    assert report.structures[0].forces.relative < 1e-4


def test_cuda_exported_symmetrized_model(broken_model, crystal, tmp_path):
    from ase_symdiag.backends.metatomic.export import export_symmetrized

    path = tmp_path / "sym.pt"
    export_symmetrized(broken_model, path, quadrature="T")
    gpu = crystal.copy()
    gpu.calc = SymDiagCalculator(str(path), device="cuda")
    reference = crystal.copy()
    reference.calc = SymDiagCalculator(broken_model, symmetrize="T")
    np.testing.assert_allclose(gpu.get_forces(), reference.get_forces(), atol=1e-10)
