"""TorchSim test models: an exactly equivariant one and one with planted lab-frame terms,
and a tiny ASE adapter (one system per call) that shares no code with the backend.

The planted terms are analytic, so the tests know the breaking they must find:
``E_b = a e.S + b sum_i ((x_i - c).e)^2`` per system, with ``S = sum_i x_i``,
``c`` the centroid and ``e`` a fixed lab axis. The ``a`` term is a lambda = 1
(odd-parity) breaking of the energy, ``F_b = -a e`` on every atom (a net force);
the ``b`` term a lambda = 0 + 2 one with a net torque.
"""

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from torch_sim.models.interface import ModelInterface
from torch_sim.models.lennard_jones import LennardJonesModel

AXIS = (0.0, 0.0, 1.0)


def lennard_jones(stress: bool = True) -> LennardJonesModel:
    """An exactly O(3)-invariant Cu-like Lennard-Jones model in float64 (eV, Å)."""
    return LennardJonesModel(sigma=2.3, epsilon=0.05, cutoff=5.0, dtype=torch.float64, compute_stress=stress)


class PlantedModel(ModelInterface):
    """``inner`` (equivariant) plus the planted terms of the module docstring."""

    def __init__(self, inner, a: float = 0.0, b: float = 0.0, axis=AXIS) -> None:
        super().__init__()
        self.inner = inner
        self.a, self.b = float(a), float(b)
        self.register_buffer("axis", torch.tensor(axis, dtype=torch.float64) / np.linalg.norm(axis))
        self._device, self._dtype = inner.device, inner.dtype
        self._compute_forces, self._compute_stress = True, inner.compute_stress

    def forward(self, state, **kwargs):
        out = dict(self.inner(state))
        idx, n_sys = state.system_idx, state.n_systems
        x = state.positions
        counts = torch.bincount(idx, minlength=n_sys).to(x.dtype).unsqueeze(1)
        total = torch.zeros(n_sys, 3, dtype=x.dtype).index_add(0, idx, x)
        u = x - (total / counts)[idx]
        proj = u @ self.axis
        energy = self.a * (total @ self.axis) + self.b * torch.zeros(n_sys, dtype=x.dtype).index_add(0, idx, proj**2)
        grad = self.a * self.axis.expand_as(x) + 2 * self.b * proj.unsqueeze(1) * self.axis  # dE_b/dx_i
        out["energy"] = out["energy"] + energy
        out["forces"] = out["forces"] - grad
        if "stress" in out:
            virial = torch.zeros(n_sys, 3, 3, dtype=x.dtype).index_add(0, idx, x.unsqueeze(2) * grad.unsqueeze(1))
            volume = torch.linalg.det(state.cell).abs()
            out["stress"] = out["stress"] + virial / volume.reshape(-1, 1, 1)  # dE/d(strain) / V
        return out


class OneSystemCalculator(Calculator):
    """A TorchSim model as an ASE calculator, one system per call (TorchSim's own
    ``atoms_to_state``): the per-rotation reference for the batched backend."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import torch_sim as ts
        from ase.stress import full_3x3_to_voigt_6_stress

        super().calculate(atoms, properties, system_changes)
        out = self.model(ts.io.atoms_to_state(self.atoms, self.model.device, self.model.dtype))
        self.results["energy"] = self.results["free_energy"] = float(out["energy"][0])
        self.results["forces"] = out["forces"].detach().double().numpy()
        if "stress" in out and self.atoms.pbc.all():
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].detach().double().numpy())
