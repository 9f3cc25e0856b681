"""Independent numpy implementation of the planted symmetry-breaking terms.

Uses ASE's own neighbour list (not vesin, not torch), so the expected errors in the
tests do not share code with the model or the check.
"""

import numpy as np
from ase.neighborlist import neighbor_list


def _fc(r, cutoff):
    return np.where(r < cutoff, 0.5 * (np.cos(np.pi * r / cutoff) + 1.0), 0.0)


def quadrupole_energy(atoms, kappa, axis=(0.0, 0.0, 1.0), cutoff=5.0):
    """E_b = kappa sum_{i<j} fc(r) [(d.a)^2 - r^2/3], eV."""
    axis = np.asarray(axis) / np.linalg.norm(axis)
    _, _, d = neighbor_list("ijD", atoms, cutoff)
    r = np.linalg.norm(d, axis=1)
    return 0.5 * kappa * np.sum(_fc(r, cutoff) * ((d @ axis) ** 2 - r**2 / 3.0))


def quadrupole_forces(atoms, kappa, axis=(0.0, 0.0, 1.0), cutoff=5.0):
    """-dE_b/dx from the analytic gradient of each pair term, eV/Å.

    Checked against :func:`quadrupole_forces_fd` in the tests.
    """
    axis = np.asarray(axis) / np.linalg.norm(axis)
    i, j, d = neighbor_list("ijD", atoms, cutoff)
    r = np.linalg.norm(d, axis=1)
    fc = _fc(r, cutoff)
    dfc = np.where(r < cutoff, -0.5 * np.pi / cutoff * np.sin(np.pi * r / cutoff), 0.0)
    proj = d @ axis
    q = proj**2 - r**2 / 3.0
    # gradient of the pair term with respect to d (each unordered pair is listed twice)
    grad = (dfc * q / r)[:, None] * d + fc[:, None] * (2 * proj[:, None] * axis - 2 * d / 3.0)
    grad *= 0.5 * kappa
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, i, grad)  # d = x_j - x_i: dE/dx_i = -grad
    np.add.at(forces, j, -grad)
    return forces


def quadrupole_forces_fd(atoms, kappa, atoms_to_check, h=1e-5, **kwargs):
    """-dE_b/dx by central finite differences for some atoms, eV/Å."""
    forces = np.zeros((len(atoms_to_check), 3))
    for row, i in enumerate(atoms_to_check):
        for c in range(3):
            shifted = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, c] += sign * h
                shifted.append(quadrupole_energy(moved, kappa, **kwargs))
            forces[row, c] = -(shifted[0] - shifted[1]) / (2 * h)
    return forces


def coordination_weights(atoms, cutoff=5.0):
    """w_i = c_i - mean(c), c_i = sum_j fc(r_ij): the direct-bias weights."""
    i, d = neighbor_list("id", atoms, cutoff)
    c = np.bincount(i, weights=_fc(d, cutoff), minlength=len(atoms))
    return c - c.mean()


def rotated(atoms, rotation):
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    out.positions = atoms.positions @ rotation.T
    return out
