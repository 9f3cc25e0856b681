"""Small analytic metatomic models whose symmetry we can write down.

:class:`PairPotential` is a smooth Morse pair potential (exactly O(3) invariant)
with two optional, planted symmetry-breaking terms:

- ``quadrupole`` kappa (eV/Å^2) adds, per pair, ``kappa fc(r) [(d.a)^2 - r^2/3]``
  along a fixed unit axis ``a``: a pure angular-degree-2 (lambda = 2, even parity)
  dependence on orientation in energy, forces and stress;
- ``direct_bias`` b (eV/Å) adds ``w_i b`` to atom i's direct (non-conservative)
  force, with the invariant weight ``w_i = c_i - mean(c)`` and ``c_i = sum_j fc(r_ij)``
  the smooth coordination number: a pure lambda = 1 breaking of the direct head
  only, with zero net force (so removing the net force does not hide it).

With ``features=True`` the model also exposes ``mtt::features::planted``, three
per-atom feature channels of known symmetry content: ``sum_j fc(r_ij)`` (invariant),
``sum_j fc (d_ij . a)`` (pure lambda = 1, odd parity) and
``sum_j fc [(d_ij . a)^2 - r^2/3]`` (pure lambda = 2, even parity).

All are exported as real TorchScript :class:`metatomic.torch.AtomisticModel` files,
so tests and users exercise exactly the path a production model takes.
"""

import math
from typing import Dict, Final, List, Optional, Sequence

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System

from ase_symdiag.backends.metatomic.blocks import atom_samples, force_map, selection_mask, single_block_map, stress_map
from ase_symdiag.backends.metatomic.model import NC_FORCE, NC_STRESS

#: Morse parameters for copper (Girifalco & Weizer 1959), eV and Å
CU_MORSE = {"depth": 0.3429, "alpha": 1.3588, "r0": 2.866}


class PairPotential(torch.nn.Module):
    """Smooth Morse pair potential with optional planted symmetry breaking."""

    #: metatomic's output names, as TorchScript constants
    nc_force: Final[str] = NC_FORCE
    nc_stress: Final[str] = NC_STRESS

    def __init__(
        self,
        cutoff: float = 5.0,
        depth: float = CU_MORSE["depth"],
        alpha: float = CU_MORSE["alpha"],
        r0: float = CU_MORSE["r0"],
        quadrupole: float = 0.0,
        axis: Sequence[float] = (0.0, 0.0, 1.0),
        direct: bool = False,
        direct_bias: Sequence[float] = (0.0, 0.0, 0.0),
        allow_mixed_pbc: bool = True,
        features: bool = False,
    ) -> None:
        super().__init__()
        self.features = bool(features)
        self.cutoff = float(cutoff)
        self.depth = float(depth)
        self.alpha = float(alpha)
        self.r0 = float(r0)
        self.quadrupole = float(quadrupole)
        norm = math.sqrt(sum(float(x) ** 2 for x in axis))
        self.register_buffer("axis", torch.tensor([float(x) / norm for x in axis], dtype=torch.float64))
        self.register_buffer("direct_bias", torch.tensor([float(x) for x in direct_bias], dtype=torch.float64))
        self.direct = bool(direct)
        self.allow_mixed_pbc = bool(allow_mixed_pbc)
        self._nl = NeighborListOptions(cutoff=self.cutoff, full_list=True, strict=False)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self._nl]

    def _pair_terms(self, d: torch.Tensor):
        """Per directed pair: energy u(d), gradient du/dd (E, 3) and cutoff fc(r)."""
        r = torch.linalg.norm(d, dim=1)
        inside = r < self.cutoff
        x = math.pi * r / self.cutoff
        fc = torch.where(inside, 0.5 * (torch.cos(x) + 1.0), torch.zeros_like(r))
        dfc = torch.where(inside, -0.5 * math.pi / self.cutoff * torch.sin(x), torch.zeros_like(r))
        e = torch.exp(-self.alpha * (r - self.r0))
        morse = self.depth * ((1.0 - e) ** 2 - 1.0)
        dmorse = 2.0 * self.depth * self.alpha * (1.0 - e) * e
        u = morse * fc
        du_dr = dmorse * fc + morse * dfc
        unit = d / r.unsqueeze(1)
        grad = du_dr.unsqueeze(1) * unit
        if self.quadrupole != 0.0:
            axis = self.axis.to(d.dtype)
            proj = d @ axis
            q = proj**2 - r**2 / 3.0
            u = u + self.quadrupole * fc * q
            grad = grad + self.quadrupole * (
                (dfc * q).unsqueeze(1) * unit
                + fc.unsqueeze(1) * (2.0 * proj.unsqueeze(1) * axis.unsqueeze(0) - 2.0 * d / 3.0)
            )
        return u, grad, fc

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if len(systems) == 0:
            return results
        device = systems[0].positions.device
        dtype = systems[0].positions.dtype
        energies: List[torch.Tensor] = []
        forces: List[torch.Tensor] = []
        stresses: List[torch.Tensor] = []
        planted: List[torch.Tensor] = []
        for system in systems:
            n_periodic = int(system.pbc.sum())
            if not self.allow_mixed_pbc and n_periodic != 0 and n_periodic != 3:
                raise ValueError(
                    "this model does not support mixed periodic boundary conditions"
                )
            neighbors = system.get_neighbor_list(self._nl)
            first = neighbors.samples.column("first_atom").to(torch.long)
            d = neighbors.values.reshape(-1, 3)
            u, grad, fc = self._pair_terms(d)
            n = len(system)
            per_atom = torch.zeros(n, dtype=dtype, device=device).index_add(0, first, 0.5 * u)
            energies.append(per_atom)
            if self.nc_force in outputs:
                f = torch.zeros((n, 3), dtype=dtype, device=device).index_add(0, first, grad)
                coordination = torch.zeros(n, dtype=dtype, device=device).index_add(0, first, fc)
                weight = coordination - coordination.mean()
                forces.append(f + weight.unsqueeze(1) * self.direct_bias.to(dtype).unsqueeze(0))
            if "mtt::features::planted" in outputs:
                axis = self.axis.to(dtype)
                proj = d @ axis
                r2 = (d**2).sum(dim=1)
                channels = torch.stack([fc, fc * proj, fc * (proj**2 - r2 / 3.0)], dim=1)
                planted.append(torch.zeros((n, 3), dtype=dtype, device=device).index_add(0, first, channels))
            if self.nc_stress in outputs:
                virial = 0.5 * d.T @ grad
                volume = torch.abs(torch.linalg.det(system.cell))
                stresses.append(virial / volume)

        # engines such as LAMMPS ask for the atoms they own only (selected_atoms)
        all_samples = atom_samples(systems, device)
        keep = selection_mask(all_samples, selected_atoms)
        kept_samples = Labels(["system", "atom"], all_samples.values[keep])

        if "energy" in outputs:
            per_atom_values = torch.cat(energies)
            if outputs["energy"].sample_kind == "atom":
                values = per_atom_values[keep].unsqueeze(1)
                samples = kept_samples
            else:
                owner = all_samples.column("system").to(torch.long)
                masked = torch.where(keep, per_atom_values, torch.zeros_like(per_atom_values))
                values = torch.zeros(len(systems), dtype=dtype, device=device).index_add(0, owner, masked)
                values = values.unsqueeze(1)
                samples = Labels(
                    ["system"], torch.arange(len(systems), device=device).reshape(-1, 1)
                )
            block = TensorBlock(
                values=values,
                samples=samples,
                components=[],
                properties=Labels(["energy"], torch.tensor([[0]], device=device)),
            )
            results["energy"] = single_block_map(block, device)

        if self.nc_force in outputs:
            results[self.nc_force] = force_map(systems, torch.cat(forces), selected_atoms, self.nc_force)

        if "mtt::features::planted" in outputs:
            block = TensorBlock(
                values=torch.cat(planted)[keep],
                samples=kept_samples,
                components=[],
                properties=Labels(["feature"], torch.arange(3, device=device).reshape(-1, 1)),
            )
            results["mtt::features::planted"] = single_block_map(block, device)

        if self.nc_stress in outputs:
            results[self.nc_stress] = stress_map(torch.stack(stresses), self.nc_stress)
        return results


def export_pair_potential(
    path: Optional[str] = None,
    *,
    atomic_types: Sequence[int] = (1, 6, 7, 8, 29),
    dtype: str = "float64",
    name: str = "morse-pair-potential",
    **kwargs,
):
    """Build (and save to ``path`` if given) a :class:`PairPotential` AtomisticModel.

    ``kwargs`` go to :class:`PairPotential` (``quadrupole``, ``axis``, ``direct``,
    ``direct_bias``, ``allow_mixed_pbc``, ``features``, Morse parameters, ``cutoff``).
    """
    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata

    module = PairPotential(**kwargs).eval()
    if dtype == "float32":
        module = module.to(torch.float32)
    outputs = {"energy": ModelOutput(unit="eV", sample_kind="atom")}
    if module.direct:
        outputs[NC_FORCE] = ModelOutput(unit="eV/Angstrom", sample_kind="atom")
        outputs[NC_STRESS] = ModelOutput(unit="eV/Angstrom^3", sample_kind="system")
    if module.features:
        outputs["mtt::features::planted"] = ModelOutput(sample_kind="atom")
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=list(atomic_types),
        interaction_range=module.cutoff,
        length_unit="angstrom",
        supported_devices=["cuda", "cpu"],
        dtype=dtype,
    )
    description = (
        f"Smooth Morse pair potential (cutoff {module.cutoff} Å), planted quadrupole "
        f"kappa={module.quadrupole} eV/Å^2, direct force bias {module.direct_bias.tolist()} eV/Å"
    )
    metadata = ModelMetadata(name=name, description=description, authors=["ase-symdiag"])
    model = AtomisticModel(module, metadata, capabilities)
    if path is not None:
        from ase_symdiag.report import atomic_save

        atomic_save(str(path), model.save)
    return model
