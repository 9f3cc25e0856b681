"""The group O(3): operations, quadratures, irreducible representations, transformation rules.

numpy and scipy only (no ASE, no torch, no metatomic), so that every backend and
metric can use it:

- :mod:`~ase_symdiag.o3.operations`: seeded Haar-random operations, validation of user matrices;
- :mod:`~ase_symdiag.o3.quadrature`: weighted operation sets with measured exactness, and their names;
- :mod:`~ase_symdiag.o3.irreps`: real Wigner-D matrices and "which channels does a set average away";
- :mod:`~ase_symdiag.o3.transforms`: how scalars, vectors and rank-2 tensors rotate and back-rotate.
"""

from ase_symdiag.o3.irreps import Channel, channel_average, channel_basis, invariant_counts, removed_channels, wigner_D
from ase_symdiag.o3.operations import haar_rotations, validate_rotations
from ase_symdiag.o3.quadrature import (
    O3Quadrature,
    group_quadrature,
    grid_quadrature,
    haar_random,
    identity_quadrature,
    lebedev_quadrature,
    quadrature_from_name,
    smallest_exact_quadrature,
)

__all__ = [
    "Channel",
    "O3Quadrature",
    "channel_average",
    "channel_basis",
    "grid_quadrature",
    "group_quadrature",
    "haar_random",
    "haar_rotations",
    "identity_quadrature",
    "invariant_counts",
    "lebedev_quadrature",
    "quadrature_from_name",
    "removed_channels",
    "smallest_exact_quadrature",
    "validate_rotations",
    "wigner_D",
]
