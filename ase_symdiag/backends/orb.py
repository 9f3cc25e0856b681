"""Orb-v3 models (orb-models 0.5.0) as one batched TorchSim ``ModelInterface``.

torch-sim's own Orb wrapper needs orb-models >= 0.6.2; this adapter works with the
0.5.0 release on PyPI. :class:`OrbModel` turns every system of a ``SimState`` into an
orb graph with orb's own featurisation (``ase_atoms_to_atom_graphs``: the same
neighbour search, wrapping and embeddings as ``ORBCalculator``), joins them with
``batch_graphs`` and runs the model ONCE on the batch, so the K rotated copies of a
structure are one model call.

Outputs (TorchSim conventions, detached): ``energy`` (S,) eV, ``forces`` (N, 3) eV/Å,
``stress`` (S, 3, 3) eV/Å^3 (ASE sign: ``(1/V) dE/dstrain``). A direct model returns
its direct heads; a conservative model returns the gradients of its energy, and its
direct heads (if it has them) as ``direct_forces``/``direct_stress``.

The neighbour search runs in the model's dtype (orb's default is float32, which
flips neighbours at the cutoff between rotated copies and so reads as breaking that
is not the model's). float64 is the default here; orb-v3 runs in float64.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from ase_symdiag.errors import ModelError

try:  # the batched interface; torch-sim is an optional dependency
    from torch_sim.models.interface import ModelInterface
except ImportError:  # pragma: no cover - without torch-sim the adapter is a plain module
    ModelInterface = torch.nn.Module  # type: ignore[misc,assignment]

#: orb's standard graph settings (``SystemConfig(radius=6.0, max_num_neighbors=120)``)
DEFAULT_RADIUS = 6.0
DEFAULT_MAX_NEIGHBORS = 120

#: architecture names of the command line (``orb-v3-direct:PATH``) -> orb-models builder
ARCHITECTURES = {
    "orb-v3-direct": "orb_v3_direct_architecture",
    "orb-v3-conservative": "orb_v3_conservative_architecture",
}


def default_system_config():
    """orb's ``SystemConfig(radius=6.0, max_num_neighbors=120)``."""
    from orb_models.forcefield.atomic_system import SystemConfig

    return SystemConfig(radius=DEFAULT_RADIUS, max_num_neighbors=DEFAULT_MAX_NEIGHBORS)


def build_architecture(name: str, *, system_config=None, **sizes: int) -> torch.nn.Module:
    """A randomly initialised orb-v3 ``name`` (a key of :data:`ARCHITECTURES`) on the CPU.

    ``sizes``: the architecture function's size arguments (``latent_dim``,
    ``base_mlp_hidden_dim``, ``num_message_passing_steps``, ...), for small test models.
    Raises :class:`ModelError` for an unknown name or size argument.
    """
    from orb_models.forcefield import pretrained

    if name not in ARCHITECTURES:
        raise ModelError(f"unknown Orb architecture '{name}' (known: {', '.join(ARCHITECTURES)})")
    try:
        return getattr(pretrained, ARCHITECTURES[name])(
            system_config=system_config or default_system_config(), device="cpu", **sizes
        )
    except TypeError as error:
        raise ModelError(f"{name}: bad architecture argument: {error}") from None


def is_conservative(model: torch.nn.Module) -> bool:
    """Whether ``model`` is orb's ConservativeForcefieldRegressor (energy gradients)."""
    return hasattr(model, "grad_forces_name")


def _voigt_to_matrix(voigt: torch.Tensor) -> torch.Tensor:
    """(S, 6) stress in orb's Voigt order (xx, yy, zz, yz, xz, xy) -> (S, 3, 3)."""
    from orb_models.forcefield.forcefield_utils import torch_voigt_6_to_full_3x3_stress

    return torch_voigt_6_to_full_3x3_stress(voigt.reshape(-1, 6))


class OrbModel(ModelInterface):
    """An orb-models 0.5.0 regressor as a batched TorchSim model.

    ``model``: a ``DirectForcefieldRegressor`` or ``ConservativeForcefieldRegressor``
    (e.g. from ``orb_v3_direct_architecture()`` with weights loaded).
    ``dtype``: float64 (default) or float32, for the model and the neighbour search.
    ``system_config``: the graph settings (default: the model's own, else radius 6 Å and
    120 neighbours). ``conservative``: use the energy gradients (default: whenever the
    model is conservative). ``source``: how reports name the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
        system_config=None,
        conservative: Optional[bool] = None,
        compute_stress: bool = True,
        source: str = "<orb object>",
    ) -> None:
        super().__init__()
        if not hasattr(model, "heads") or not hasattr(model, "predict"):
            raise ModelError(f"{source}: expected an orb-models forcefield regressor, got {type(model).__name__}")
        dtype = torch.float64 if dtype is None else dtype
        if dtype not in (torch.float32, torch.float64):
            raise ModelError(f"{source}: dtype must be torch.float32 or torch.float64, got {dtype}")
        if conservative and not is_conservative(model):
            raise ModelError(f"{source}: conservative forces asked for, but the model is a direct Orb model")
        self._device = torch.device(device or "cpu")
        self._dtype = dtype
        self._compute_forces = True
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"
        self.conservative = is_conservative(model) if conservative is None else bool(conservative)
        self.system_config = system_config or getattr(model, "system_config", None) or default_system_config()
        self.source = source
        self.model = model.to(device=self._device, dtype=dtype).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @property
    def has_direct_heads(self) -> bool:
        """Whether the model has direct force and stress heads."""
        return "forces" in self.model.heads and "stress" in self.model.heads

    def graphs(self, state):
        """One orb ``AtomGraphs`` batch of every system of ``state`` (orb's featurisation)."""
        from ase import Atoms
        from orb_models.forcefield.atomic_system import ase_atoms_to_atom_graphs
        from orb_models.forcefield.base import batch_graphs

        positions = state.positions.detach().cpu().double().numpy()
        cells = state.row_vector_cell.detach().cpu().double().numpy()
        numbers = state.atomic_numbers.detach().cpu().numpy()
        system_idx = state.system_idx.detach().cpu().numpy()
        pbc = np.broadcast_to(state.pbc.detach().cpu().numpy(), (3,))
        if pbc.any() and not pbc.all():
            raise ModelError(f"{self.source}: Orb models need a structure periodic in all directions or in none")
        graphs: List = []
        for index in range(len(cells)):
            mask = system_idx == index
            atoms = Atoms(numbers=numbers[mask], positions=positions[mask], cell=cells[index], pbc=pbc)
            with warnings.catch_warnings():
                # orb 0.5.0 calls ase's cell_to_cellpar on a torch tensor (numpy >= 2 warns)
                warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
                graphs.append(
                    ase_atoms_to_atom_graphs(
                        atoms,
                        self.system_config,
                        output_dtype=self._dtype,
                        graph_construction_dtype=self._dtype,
                        device=self._device,
                    )
                )
        return batch_graphs(graphs).to(device=self._device, dtype=self._dtype)

    def forward(self, state) -> Dict[str, torch.Tensor]:
        """energy (S,), forces (N, 3), stress (S, 3, 3) of every system of ``state``."""
        batch = self.graphs(state)
        if self.conservative:
            with torch.enable_grad():
                out = self.model.predict(batch)
            results = {
                "energy": out[self.model.energy_name],
                "forces": out[self.model.grad_forces_name],
                "stress": _voigt_to_matrix(out[self.model.grad_stress_name]),
            }
            if self.model.forces_name in out:
                results["direct_forces"] = out[self.model.forces_name]
            if self.model.stress_name in out:
                results["direct_stress"] = _voigt_to_matrix(out[self.model.stress_name])
        else:
            with torch.no_grad():
                out = self.model.predict(batch)
            results = {"energy": out["energy"], "forces": out["forces"], "stress": _voigt_to_matrix(out["stress"])}
        results["energy"] = results["energy"].reshape(-1)
        if not self._compute_stress:
            results.pop("stress")
            results.pop("direct_stress", None)
        return {key: value.detach() for key, value in results.items()}

    def rotational_grad(self, state) -> torch.Tensor:
        """orb's ``rotational_grad`` (S, 3, 3): dE/dG at G = 0, where every system is
        turned by ``R = exp(G - G^T)`` acting on row vectors (``x -> x R``, ``cell -> cell R``).

        Computed by autograd through orb's own ``compute_differentiable_edge_vectors``,
        for direct and conservative models alike (:mod:`ase_symdiag.metrics.equigrad`
        turns it into dE/dθ about x, y, z).
        """
        batch = self.graphs(state)
        with torch.enable_grad():
            vectors, _, generator = batch.compute_differentiable_edge_vectors(
                use_stress_displacement=False, use_rotation=True
            )
            batch.edge_features["vectors"] = vectors
            if self.conservative:
                energy_head = self.model.heads[self.model.energy_name]
                node_features = self.model.model(batch)["node_features"]
                energy = energy_head.denormalize(energy_head(node_features, batch), batch)
                if self.model.pair_repulsion:
                    energy = energy + self.model.pair_repulsion_fn(batch)["energy"]
            else:
                energy = self.model.predict(batch)["energy"]
            (gradient,) = torch.autograd.grad(energy.sum(), [generator])
        return gradient.detach()




def architecture_sizes(state_dict: dict) -> Dict[str, int]:
    """The size arguments of the orb-v3 architecture functions that ``state_dict`` was
    saved from (``latent_dim``, ``base_mlp_hidden_dim``, ``base_mlp_depth``,
    ``head_mlp_hidden_dim``, ``head_mlp_depth``, ``num_message_passing_steps``), read
    from its tensor shapes, so small and full-size checkpoints load alike.
    Raises :class:`ModelError` when a key orb-v3 always has is missing."""
    try:
        encoder = [k for k in state_dict if k.startswith("model._encoder._node_fn.mlp.NN-") and k.endswith(".weight")]
        head = [k for k in state_dict if k.startswith("heads.energy.mlp.NN-") and k.endswith(".weight")]
        steps = {k.split(".")[2] for k in state_dict if k.startswith("model.gnn_stacks.")}
        sizes = {
            "latent_dim": int(state_dict["model.atom_emb.embeddings.weight"].shape[1]),
            "base_mlp_hidden_dim": int(state_dict["model._encoder._node_fn.mlp.NN-0.weight"].shape[0]),
            "base_mlp_depth": len(encoder) - 1,
            "head_mlp_hidden_dim": int(state_dict["heads.energy.mlp.NN-0.weight"].shape[0]),
            "head_mlp_depth": len(head) - 1,
            "num_message_passing_steps": len(steps),
        }
    except (KeyError, IndexError, AttributeError) as error:
        raise ModelError(f"not an orb-v3 state_dict (missing {error})") from None
    return sizes


__all__ = ["ARCHITECTURES", "OrbModel", "architecture_sizes", "build_architecture", "default_system_config", "is_conservative"]
