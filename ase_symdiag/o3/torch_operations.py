"""The Haar sampler of :mod:`ase_symdiag.o3.operations` in torch, for samplers whose
generator lives with torch state (the MD engine's stochastic rotations, whose
``torch.Generator`` is part of the checkpoint). Not imported by :mod:`ase_symdiag.o3`,
which stays free of torch.
"""

import torch

__all__ = ["haar_from_gaussian", "haar_rotations"]


def haar_from_gaussian(gaussian: torch.Tensor, include_inversion: bool = True) -> torch.Tensor:
    """:func:`ase_symdiag.o3.operations.haar_from_gaussian` in torch: Haar O(3)
    (``include_inversion=False``: SO(3)) operations ``(..., 3, 3)`` from standard-normal
    matrices ``(..., 3, 3)``, by QR with the sign fix of Mezzadri 2007."""
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    if not include_inversion:
        q = torch.where((torch.linalg.det(q) < 0).unsqueeze(-1).unsqueeze(-1), -q, q)
    return q


def haar_rotations(n: int, generator: torch.Generator, include_inversion: bool = True) -> torch.Tensor:
    """``n`` Haar-random O(3) (or SO(3)) matrices ``(n, 3, 3)``, float64 on the
    generator's device: :func:`haar_from_gaussian` of ``9 n`` normals drawn from
    ``generator`` (so its state alone fixes them)."""
    z = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64, device=generator.device)
    return haar_from_gaussian(z, include_inversion)
