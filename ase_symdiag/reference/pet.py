"""A small PET-style point-edge transformer, unconstrained on purpose.

Design (after Pozdnyakov & Ceriotti's PET and metatrain's implementation, reduced
to what a CPU can train in minutes):

- for each centre atom i, one token per neighbour j within the cutoff, built from
  the RAW Cartesian edge vector: ``Linear((x, y, z, r) / cutoff)`` plus a
  neighbour-species embedding, times the smooth cutoff ``fc(r_ij)``; there is no
  rotational constraint anywhere, so rotational symmetry is only learned (e.g. by
  augmentation);
- per centre, a transformer over ``[centre token, neighbour tokens]`` (padded to
  the largest neighbour count in the batch). Attention weights are
  ``exp(q.k) fc_j / sum_k exp(q.k) fc_k``: padded neighbours (weight 0) are masked,
  and a neighbour leaving the cutoff fades out smoothly;
- ``n_layers`` message-passing layers: the input token of edge i->j in layer k+1
  is built from the OUTPUT token of the reverse edge j->i in layer k (found with
  the neighbour list's reverse-pair index), the raw edge geometry and the neighbour
  species, as in PET;
- per layer, an atomic energy head on the centre token plus an edge head on the
  edge tokens (weighted by fc, summed over neighbours); all heads are summed, scaled
  by ``energy_scale`` and added to a per-species composition baseline (fitted by
  least squares before training, see :func:`fit_composition`);
- optional direct (non-conservative) force head: per edge, ``fc (s r_ij/r + u)``
  with a scalar ``s`` and a raw 3-vector ``u`` read from the last edge tokens,
  summed over neighbours. Output name ``non_conservative_force``;
- per-layer per-atom features (the centre tokens, ``(n_atoms, d_model)``) are
  exposed as the outputs ``mtt::features::layer<k>`` (k = 0, 1, ...).

The module is TorchScript-compatible and exported as a metatomic AtomisticModel by
:func:`export_pet`. :meth:`PET.compute` is the batched core on plain tensors, used
directly by :mod:`ase_symdiag.reference.loss` (with neighbour lists computed once per
structure and reused under rotations).
"""

import math
from typing import Dict, Final, List, Optional, Sequence

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System

from ase_symdiag.backends.metatomic.blocks import single_block_map
from ase_symdiag.backends.metatomic.model import NC_FORCE
from ase_symdiag.errors import ModelError

ENERGY = "energy"
FEATURES_PREFIX = "mtt::features::layer"

#: default hyper-parameters (small enough to train on one CPU core in minutes)
DEFAULT_HYPERS = {
    "cutoff": 5.0,
    "cutoff_width": 1.0,
    "d_model": 48,
    "n_heads": 2,
    "n_layers": 2,
    "n_blocks": 1,
    "d_feedforward": 96,
    "direct_forces": False,
}


def cutoff_function(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """1 below ``cutoff - width``, cosine switch to 0 at ``cutoff`` (C1 smooth)."""
    x = (r - (cutoff - width)) / width
    x = torch.clamp(x, 0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * x))


def reverse_pair_index(
    first: torch.Tensor, second: torch.Tensor, shifts: torch.Tensor, n_atoms: int
) -> torch.Tensor:
    """For each directed pair (i, j, S), the index of (j, i, -S) (itself if absent).

    ``first``/``second`` are global atom indices (long, (E,)), ``shifts`` integer
    cell shifts (long, (E, 3)).
    """
    n_edges = first.shape[0]
    if n_edges == 0:
        return torch.zeros(0, dtype=torch.long, device=first.device)
    k = int(shifts.abs().max()) if n_edges > 0 else 0
    base = 2 * k + 1
    s = shifts + k
    r = k - shifts
    key = (((first * n_atoms + second) * base + s[:, 0]) * base + s[:, 1]) * base + s[:, 2]
    rkey = (((second * n_atoms + first) * base + r[:, 0]) * base + r[:, 1]) * base + r[:, 2]
    sorted_key, order = torch.sort(key)
    pos = torch.searchsorted(sorted_key, rkey).clamp(max=n_edges - 1)
    found = sorted_key[pos] == rkey
    own = torch.arange(n_edges, device=first.device)
    return torch.where(found, order[pos], own)


class _MLP(torch.nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.lin1 = torch.nn.Linear(d_in, d_hidden)
        self.lin2 = torch.nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(torch.nn.functional.silu(self.lin1(x)))


class CutoffAttentionBlock(torch.nn.Module):
    """Pre-norm transformer block whose attention is weighted by the smooth cutoff."""

    def __init__(self, d_model: int, n_heads: int, d_feedforward: int) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ModelError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.norm1 = torch.nn.LayerNorm(d_model)
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.out = torch.nn.Linear(d_model, d_model)
        self.norm2 = torch.nn.LayerNorm(d_model)
        self.ff = _MLP(d_model, d_feedforward, d_model)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``x``: (n, T, d) tokens; ``weights``: (n, T) in [0, 1], 0 = masked."""
        n, t, d = x.shape
        h = self.norm1(x)
        qkv = self.qkv(h).reshape(n, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (n, H, T, dh)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(float(self.d_head))
        w = weights.unsqueeze(1).unsqueeze(2)  # (n, 1, 1, T)
        masked = torch.where(w > 0.0, scores, torch.full_like(scores, -1e30))
        shift = masked.max(dim=-1, keepdim=True).values.detach()
        # exp(s) fc / sum exp(s) fc: softmax weighted by the cutoff
        e = torch.exp(torch.clamp(scores - shift, max=0.0)) * w
        attention = e / e.sum(dim=-1, keepdim=True)
        mixed = torch.matmul(attention, v).permute(0, 2, 1, 3).reshape(n, t, d)
        x = x + self.out(mixed)
        return x + self.ff(self.norm2(x))


class PET(torch.nn.Module):
    """Unconstrained point-edge transformer energy model (see module docstring)."""

    #: metatomic's output names, as TorchScript constants
    nc_force: Final[str] = NC_FORCE

    def __init__(
        self,
        atomic_types: Sequence[int],
        cutoff: float = 5.0,
        cutoff_width: float = 1.0,
        d_model: int = 48,
        n_heads: int = 2,
        n_layers: int = 2,
        n_blocks: int = 1,
        d_feedforward: int = 96,
        direct_forces: bool = False,
    ) -> None:
        super().__init__()
        types = sorted({int(t) for t in atomic_types})
        if len(types) == 0:
            raise ModelError("atomic_types must not be empty")
        if n_layers < 1:
            raise ModelError(f"n_layers must be >= 1, got {n_layers}")
        if not 0.0 < cutoff_width <= cutoff:
            raise ModelError(f"cutoff_width must be in (0, cutoff], got {cutoff_width}")
        self.atomic_types: List[int] = types
        self.cutoff = float(cutoff)
        self.cutoff_width = float(cutoff_width)
        self.d_model = int(d_model)
        self.n_layers = int(n_layers)
        self.direct_forces = bool(direct_forces)
        n_types = len(types)
        index = torch.full((max(types) + 1,), -1, dtype=torch.long)
        for i, t in enumerate(types):
            index[t] = i
        self.register_buffer("type_index", index)
        self.register_buffer("composition", torch.zeros(n_types, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones(1, dtype=torch.float64))
        # edge-head sums are divided by this (1 = plain sum; kept for flexibility)
        self.register_buffer("neighbor_norm", torch.ones(1, dtype=torch.float64))

        d = self.d_model
        self.geometry = torch.nn.ModuleList([torch.nn.Linear(4, d) for _ in range(n_layers)])
        self.neighbor_embedding = torch.nn.ModuleList(
            [torch.nn.Embedding(n_types, d) for _ in range(n_layers)]
        )
        self.center_embedding = torch.nn.ModuleList(
            [torch.nn.Embedding(n_types, d) for _ in range(n_layers)]
        )
        # layer 0: [geometry, neighbour species] -> token (an MLP, as PET's "compress");
        # layer k > 0: [geometry, reverse-edge token of layer k-1, neighbour species] -> token
        self.compress = torch.nn.ModuleList(
            [_MLP(2 * d if k == 0 else 3 * d, d_feedforward, d) for k in range(n_layers)]
        )
        self.blocks = torch.nn.ModuleList(
            [
                torch.nn.ModuleList(
                    [CutoffAttentionBlock(d, n_heads, d_feedforward) for _ in range(n_blocks)]
                )
                for _ in range(n_layers)
            ]
        )
        self.node_heads = torch.nn.ModuleList([_MLP(d, d, 1) for _ in range(n_layers)])
        self.edge_heads = torch.nn.ModuleList([_MLP(d, d, 1) for _ in range(n_layers)])
        self.force_head = _MLP(d, d, 4)
        self._nl = NeighborListOptions(cutoff=self.cutoff, full_list=True, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self._nl]

    def compute(
        self,
        vectors: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        reverse: torch.Tensor,
        species: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """Batched core on plain tensors.

        ``vectors`` (E, 3) edge vectors r_j - r_i (+ shift), ``centers``/``neighbors``
        (E,) global atom indices, ``reverse`` (E,) index of the reverse edge,
        ``species`` (N,) species indices (into ``atomic_types``). Returns a dict with
        ``energy`` (N,) per-atom energies, ``features::<k>`` (N, d) and, with the
        direct head, ``non_conservative_force`` (N, 3).
        """
        n_atoms = species.shape[0]
        n_edges = centers.shape[0]
        d = self.d_model
        dtype = vectors.dtype
        device = vectors.device

        r = torch.sqrt((vectors**2).sum(dim=1) + 1e-20)
        fc = cutoff_function(r, self.cutoff, self.cutoff_width)
        geometry_in = torch.cat([vectors, r.unsqueeze(1)], dim=1)  # raw, in Å

        # padding: (n_atoms, M) table of edge indices (n_edges = dummy)
        counts = torch.bincount(centers, minlength=n_atoms)
        max_neighbors = int(counts.max()) if n_edges > 0 else 0
        sorted_centers, order = torch.sort(centers, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n_edges, device=device) - starts[sorted_centers]
        slot = torch.empty(n_edges, dtype=torch.long, device=device)
        slot[order] = sorted_centers * max_neighbors + rank
        pad_index = torch.full((n_atoms * max_neighbors,), n_edges, dtype=torch.long, device=device)
        pad_index[slot] = torch.arange(n_edges, device=device)
        pad_index = pad_index.reshape(n_atoms, max_neighbors)

        fc_padded = torch.cat([fc, torch.zeros(1, dtype=dtype, device=device)])[pad_index]
        weights = torch.cat([torch.ones(n_atoms, 1, dtype=dtype, device=device), fc_padded], dim=1)

        neighbor_species = species[neighbors]
        energy = torch.zeros(n_atoms, dtype=dtype, device=device)
        results: Dict[str, torch.Tensor] = {}
        edge_tokens = torch.zeros(n_edges, d, dtype=dtype, device=device)
        node = torch.zeros(n_atoms, d, dtype=dtype, device=device)
        for k, (geometry, neighbor_embedding, center_embedding, blocks, node_head, edge_head) in enumerate(
            zip(
                self.geometry,
                self.neighbor_embedding,
                self.center_embedding,
                self.blocks,
                self.node_heads,
                self.edge_heads,
            )
        ):
            g = geometry(geometry_in)
            nb = neighbor_embedding(neighbor_species)
            tokens = torch.zeros_like(g)
            if k == 0:
                for j, compress in enumerate(self.compress):
                    if j == 0:
                        tokens = g + nb + compress(torch.cat([g, nb], dim=1))
                center = center_embedding(species)
            else:
                for j, compress in enumerate(self.compress):
                    if j == k:
                        tokens = compress(torch.cat([g, edge_tokens[reverse], nb], dim=1))
                center = node + center_embedding(species)
            tokens = tokens * fc.unsqueeze(1)
            padded = torch.cat([tokens, torch.zeros(1, d, dtype=dtype, device=device)])[pad_index]
            x = torch.cat([center.unsqueeze(1), padded], dim=1)  # (n, 1 + M, d)
            for block in blocks:
                x = block(x, weights)
            node = x[:, 0, :]
            edge_tokens = x[:, 1:, :].reshape(n_atoms * max_neighbors, d)[slot]
            results["features::" + str(k)] = node
            edge_energy = edge_head(edge_tokens).squeeze(1) * fc / self.neighbor_norm.to(dtype)
            energy = energy + node_head(node).squeeze(1)
            energy = energy.index_add(0, centers, edge_energy)

        energy = energy * self.energy_scale.to(dtype) + self.composition.to(dtype)[species]
        results["energy"] = energy
        if self.direct_forces:
            out = self.force_head(edge_tokens)
            unit = vectors / r.unsqueeze(1)
            per_edge = fc.unsqueeze(1) * (out[:, :1] * unit + out[:, 1:])
            per_edge = per_edge / self.neighbor_norm.to(dtype)
            forces = torch.zeros(n_atoms, 3, dtype=dtype, device=device).index_add(0, centers, per_edge)
            results[self.nc_force] = forces * self.energy_scale.to(dtype)
        return results

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
        vectors_list: List[torch.Tensor] = []
        centers_list: List[torch.Tensor] = []
        neighbors_list: List[torch.Tensor] = []
        shifts_list: List[torch.Tensor] = []
        species_list: List[torch.Tensor] = []
        system_list: List[torch.Tensor] = []
        atom_list: List[torch.Tensor] = []
        offset = 0
        for s, system in enumerate(systems):
            n = len(system)
            types = system.types.to(torch.long)
            if int(types.min()) < 0 or int(types.max()) >= self.type_index.shape[0]:
                raise ValueError("the system contains atomic types this model does not know")
            species = self.type_index[types]
            if bool((species < 0).any()):
                raise ValueError("the system contains atomic types this model does not know")
            neighbors = system.get_neighbor_list(self._nl)
            samples = neighbors.samples
            vectors_list.append(neighbors.values.reshape(-1, 3))
            centers_list.append(samples.column("first_atom").to(torch.long) + offset)
            neighbors_list.append(samples.column("second_atom").to(torch.long) + offset)
            shifts_list.append(
                torch.stack(
                    [
                        samples.column("cell_shift_a"),
                        samples.column("cell_shift_b"),
                        samples.column("cell_shift_c"),
                    ],
                    dim=1,
                ).to(torch.long)
            )
            species_list.append(species)
            system_list.append(torch.full((n,), s, dtype=torch.long, device=device))
            atom_list.append(torch.arange(n, dtype=torch.long, device=device))
            offset += n
        centers = torch.cat(centers_list)
        neighbors = torch.cat(neighbors_list)
        reverse = reverse_pair_index(centers, neighbors, torch.cat(shifts_list), offset)
        computed = self.compute(
            torch.cat(vectors_list), centers, neighbors, reverse, torch.cat(species_list)
        )
        system_index = torch.cat(system_list)
        atom_index = torch.cat(atom_list)

        keep = torch.arange(offset, dtype=torch.long, device=device)
        if selected_atoms is not None:
            selected = selected_atoms.values.to(torch.long)
            system_offsets = torch.zeros(len(systems), dtype=torch.long, device=device)
            sizes = torch.bincount(system_index, minlength=len(systems))
            system_offsets[1:] = torch.cumsum(sizes, 0)[:-1]
            keep = system_offsets[selected[:, 0]] + selected[:, 1]
            keep = torch.sort(keep).values
        atom_samples = Labels(
            ["system", "atom"],
            torch.stack([system_index[keep], atom_index[keep]], dim=1).to(torch.int32),
        )
        n_systems = len(systems)
        system_samples = Labels(
            ["system"], torch.arange(n_systems, dtype=torch.int32, device=device).reshape(-1, 1)
        )

        for name, requested in outputs.items():
            if name == "energy":
                per_atom = computed["energy"][keep].unsqueeze(1)
                if requested.sample_kind == "atom":
                    values = per_atom
                    samples = atom_samples
                else:
                    values = torch.zeros(n_systems, 1, dtype=per_atom.dtype, device=device)
                    values = values.index_add(0, system_index[keep], per_atom)
                    samples = system_samples
                block = TensorBlock(
                    values=values,
                    samples=samples,
                    components=[],
                    properties=Labels(["energy"], torch.tensor([[0]], device=device)),
                )
                results[name] = single_block_map(block, device)
            elif name == self.nc_force:
                if not self.direct_forces:
                    raise ValueError("this model has no direct force head")
                block = TensorBlock(
                    values=computed[self.nc_force][keep].reshape(-1, 3, 1),
                    samples=atom_samples,
                    components=[Labels(["xyz"], torch.arange(3, device=device).reshape(-1, 1))],
                    properties=Labels([self.nc_force], torch.tensor([[0]], device=device)),
                )
                results[name] = single_block_map(block, device)
            elif name.startswith("mtt::features::layer"):
                key = "features::" + name[len("mtt::features::layer"):]
                if key not in computed:
                    raise ValueError("unknown feature output " + name)
                features = computed[key][keep]
                if requested.sample_kind == "atom":
                    values = features
                    samples = atom_samples
                else:
                    values = torch.zeros(n_systems, features.shape[1], dtype=features.dtype, device=device)
                    values = values.index_add(0, system_index[keep], features)
                    samples = system_samples
                block = TensorBlock(
                    values=values,
                    samples=samples,
                    components=[],
                    properties=Labels(
                        ["feature"], torch.arange(features.shape[1], device=device).reshape(-1, 1)
                    ),
                )
                results[name] = single_block_map(block, device)
        return results


def fit_composition(counts, energies):
    """Least-squares per-species energies: ``counts`` (S, T) atoms of each species per
    structure, ``energies`` (S,). Returns (T,) float64 (minimum-norm if degenerate)."""
    import numpy as np

    counts = np.asarray(counts, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return solution


def build_pet(atomic_types: Sequence[int], hypers: Optional[dict] = None) -> PET:
    """A :class:`PET` from a hyper-parameter dict (missing keys take DEFAULT_HYPERS)."""
    merged = dict(DEFAULT_HYPERS)
    if hypers:
        unknown = set(hypers) - set(DEFAULT_HYPERS)
        if unknown:
            raise ModelError(f"unknown PET hyper-parameters: {sorted(unknown)}")
        merged.update(hypers)
    return PET(atomic_types, **merged)


def export_pet(
    model: PET,
    path: Optional[str] = None,
    *,
    name: str = "pet",
    description: str = "",
    dtype: Optional[str] = None,
    authors: Sequence[str] = ("ase-symdiag",),
):
    """Wrap ``model`` as a metatomic AtomisticModel (saved to ``path`` if given).

    Outputs: ``energy`` (per-atom capable), ``non_conservative_force`` when the
    direct head is on, and ``mtt::features::layer<k>`` for each layer. ``dtype``
    ("float32"/"float64") defaults to the dtype of the model's parameters.
    """
    import copy

    from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata

    module = copy.deepcopy(model).cpu().eval()
    if dtype is None:
        dtype = "float64" if next(module.parameters()).dtype == torch.float64 else "float32"
    if dtype not in ("float32", "float64"):
        raise ModelError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    module = module.to(torch.float64 if dtype == "float64" else torch.float32)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    outputs = {ENERGY: ModelOutput(unit="eV", sample_kind="atom")}
    if module.direct_forces:
        outputs[NC_FORCE] = ModelOutput(unit="eV/Angstrom", sample_kind="atom")
    for k in range(module.n_layers):
        outputs[FEATURES_PREFIX + str(k)] = ModelOutput(unit="", sample_kind="atom")
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=list(module.atomic_types),
        interaction_range=module.cutoff * module.n_layers,
        length_unit="angstrom",
        supported_devices=["cpu", "cuda"],
        dtype=dtype,
    )
    if not description:
        description = (
            f"Unconstrained PET-style point-edge transformer (d_model {module.d_model}, "
            f"{module.n_layers} layers, cutoff {module.cutoff} Å)"
        )
    metadata = ModelMetadata(name=name, description=description, authors=list(authors))
    atomistic = AtomisticModel(module, metadata, capabilities)
    if path is not None:
        path = str(path)
        from ase_symdiag.report import atomic_save

        atomic_save(str(path), atomistic.save)
    return atomistic
