"""The Bussi thermostat's rescaling step for the batched TorchSim engine.

TorchSim 0.6 offers the rescaling only inside ``nvt_vrescale_step`` (which also runs
the velocity Verlet step) or as the private ``_vrescale_update``; the engine needs
it alone, to track the energy it exchanges (the conserved energy of a Bussi run).
:func:`bussi_rescale` is that update, written out with the same arithmetic and the
same random draws, so that checkpoints resume bit for bit.
"""

from __future__ import annotations

import torch

__all__ = ["bussi_rescale"]


def bussi_rescale(state, tau: torch.Tensor, kT: torch.Tensor, dt: torch.Tensor):
    """Rescale ``state.momenta`` by the canonical velocity-rescaling factor of Bussi,
    Donadio and Parrinello (J. Chem. Phys. 126, 014101 (2007), eq. A7), per system.

    ``state``: a TorchSim ``MDState`` (its ``rng`` draws ``r1 ~ N(0, 1)`` and
    ``sum_{i>=2} R_i^2 ~ Gamma((N_f - 1)/2, 2)`` per system, in that order);
    ``tau`` relaxation time and ``dt`` timestep (TorchSim time units), ``kT`` the
    target (eV), scalars or ``(n_systems,)``. With ``K`` the kinetic energy,
    ``K_t = N_f kT / 2``, ``c1 = exp(-dt/tau)`` and ``c2 = (1 - c1) K_t / (N_f K)``, the
    momenta are multiplied by ``sqrt(c1 + c2 (r1^2 + sum R_i^2) + 2 r1 sqrt(c1 c2))``.
    Returns ``state`` (updated in place).
    """
    device, dtype = state.device, state.dtype
    tau = torch.as_tensor(tau, device=device, dtype=dtype)
    kT = torch.as_tensor(kT, device=device, dtype=dtype)
    dt = torch.as_tensor(dt, device=device, dtype=dtype)
    current_kT = state.calc_kT()
    dof = state.get_number_of_degrees_of_freedom()
    n_systems = current_kT.shape[0]
    if kT.dim() == 0:
        kT = kT.expand(n_systems)
    if tau.dim() == 0:
        tau = tau.expand(n_systems)
    kinetic = dof * current_kT / 2
    target = dof * kT / 2
    r1 = torch.randn(n_systems, device=device, dtype=dtype, generator=state.rng)
    # the seeded Gamma sampler (torch.distributions.Gamma takes no generator), as TorchSim
    r2 = torch._standard_gamma((dof - 1) / 2, generator=state.rng) * 2
    c1 = torch.exp(-dt / tau)
    c2 = (1 - c1) * target / kinetic / dof
    scale = c1 + (c2 * (torch.square(r1) + r2)) + (2 * r1 * torch.sqrt(c1 * c2))
    state.momenta = state.momenta * torch.sqrt(scale)[state.system_idx].unsqueeze(-1)
    return state
