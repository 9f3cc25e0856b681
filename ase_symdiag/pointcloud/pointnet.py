"""A small PointMAE / PoLAr-MAE-style segmentation transformer for detector point clouds.

Architecture (inputs: positions (B, N, 3) in cm, deposited energy (B, N, 1) in MeV):

1. **Patches**: G centres by farthest-point sampling, k nearest neighbours of each
   centre form a patch. FPS starts from the point of largest deposited energy, and
   the neighbour search, the FPS order and the point-to-centre interpolation depend
   only on distances and energies: the *grouping is exactly O(3)-equivariant*
   (rotating the event permutes nothing; up to ties in distances), so the ONLY
   symmetry breaking in the model is in its learned layers.
2. **Mini-PointNet** per patch (shared MLP + max-pool) on the RAW relative coordinates
   ``(p - c) / scale`` and ``log1p(E)``: unconstrained on purpose.
3. **Transformer encoder** over the G patch tokens plus a learned positional
   embedding (MLP) of the RAW centre coordinates ``c / scale``.
4. **Heads**: per-point segmentation (3 classes) from the inverse-distance
   interpolation of the 3 nearest patch tokens concatenated with the point's own
   features (an MLP of its raw offset to its nearest centre and its energy); an
   event-level head (2 classes: contains a shower) from max+mean pooled tokens.

Per-layer features (for :func:`ase_symdiag.pointcloud.diagnostics.layer_content`), per patch
(G, d) in FPS order: ``pointnet`` (after the mini-PointNet), ``embed`` (plus the
positional embedding), ``block{i}`` (after transformer layer i), and per point
(N, d): ``point_head`` (hidden layer of the segmentation head).

Determinism: parameters from torch's CPU generator seeded with ``config.seed`` (its
state before restored: :func:`ase_symdiag.torch_state.torch_seeded`); no dropout.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ase_symdiag.torch_state import torch_seeded


@dataclass
class PointNetConfig:
    n_points: int = 512
    n_groups: int = 32
    group_size: int = 16
    dim: int = 64
    depth: int = 3
    heads: int = 4
    n_classes: int = 3
    n_event_classes: int = 2
    scale: float = 50.0  # cm: coordinates are divided by this
    seed: int = 0


def farthest_point_sampling(positions: torch.Tensor, energy: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (B, n): FPS starting from the highest-energy point (rotation invariant)."""
    B, N, _ = positions.shape
    index = torch.empty(B, n, dtype=torch.long, device=positions.device)
    current = energy.reshape(B, N).argmax(dim=1)
    distance = torch.full((B, N), float("inf"), dtype=positions.dtype, device=positions.device)
    batch = torch.arange(B, device=positions.device)
    for i in range(n):
        index[:, i] = current
        centre = positions[batch, current]  # (B, 3)
        distance = torch.minimum(distance, ((positions - centre[:, None]) ** 2).sum(-1))
        current = distance.argmax(dim=1)
    return index


def group(positions: torch.Tensor, energy: torch.Tensor, n_groups: int, k: int):
    """Centre indices (B, G), patch member indices (B, G, k), and the 3 nearest
    centres of every point with inverse-distance weights ((B, N, 3), (B, N, 3))."""
    with torch.no_grad():
        centres = farthest_point_sampling(positions, energy, n_groups)
        batch = torch.arange(positions.shape[0], device=positions.device)[:, None]
        c = positions[batch, centres]  # (B, G, 3)
        d2 = ((c[:, :, None, :] - positions[:, None, :, :]) ** 2).sum(-1)  # (B, G, N)
        members = d2.topk(k, dim=2, largest=False).indices  # (B, G, k)
        near_d2, near = d2.transpose(1, 2).topk(min(3, n_groups), dim=2, largest=False)  # (B, N, 3)
        weights = 1.0 / (near_d2 + 1e-4)
        weights = weights / weights.sum(-1, keepdim=True)
    return centres, members, near, weights


def _mlp(*sizes: int) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class PointNetSegmenter(nn.Module):
    """See the module docstring. ``forward`` returns ``seg_logits`` (B, N, C),
    ``event_logits`` (B, 2) and, with ``features=True``, the per-layer features."""

    def __init__(self, config: Optional[PointNetConfig] = None):
        super().__init__()
        self.config = config or PointNetConfig()
        cfg = self.config
        d = cfg.dim
        with torch_seeded(cfg.seed):  # the caller's global generator is left as it was
            self.patch_mlp1 = _mlp(4, 64, 64)
            self.patch_mlp2 = _mlp(128, 128, d)
            self.pos_embed = _mlp(3, 64, d)
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
                for _ in range(cfg.depth)
            )
            self.norm = nn.LayerNorm(d)
            self.point_mlp = _mlp(4, 32, 32)
            self.seg_head1 = _mlp(d + 32, 64)
            self.seg_head2 = nn.Sequential(nn.GELU(), nn.Linear(64, cfg.n_classes))
            self.event_head = _mlp(2 * d, 64, cfg.n_event_classes)

    def forward(self, positions: torch.Tensor, energy: torch.Tensor, groups=None, features: bool = False) -> Dict[str, torch.Tensor]:
        cfg = self.config
        B, N, _ = positions.shape
        energy = energy.reshape(B, N, 1)
        if groups is None:
            groups = group(positions, energy, cfg.n_groups, cfg.group_size)
        centres, members, near, weights = groups
        batch = torch.arange(B, device=positions.device)
        x = positions / cfg.scale
        e = torch.log1p(energy.clamp_min(0.0))
        c = x[batch[:, None], centres]  # (B, G, 3)
        local = x[batch[:, None, None], members] - c[:, :, None, :]  # raw relative coordinates
        patch_in = torch.cat([local * 10.0, e[batch[:, None, None], members]], dim=-1)  # (B, G, k, 4)
        h = self.patch_mlp1(patch_in)
        h = torch.cat([h, h.max(dim=2, keepdim=True).values.expand_as(h)], dim=-1)
        tokens = self.patch_mlp2(h).max(dim=2).values  # (B, G, d)
        out: Dict[str, torch.Tensor] = {}
        if features:
            out["pointnet"] = tokens
        t = tokens + self.pos_embed(c)
        if features:
            out["embed"] = t
        for i, block in enumerate(self.blocks):
            t = block(t)
            if features:
                out[f"block{i + 1}"] = t
        t = self.norm(t)
        # per point: interpolated tokens + own features (raw offset to the nearest centre, energy)
        interp = (t[batch[:, None, None], near] * weights[..., None]).sum(dim=2)  # (B, N, d)
        offset = (x - c[batch[:, None], near[:, :, 0]]) * 10.0
        own = self.point_mlp(torch.cat([offset, e], dim=-1))
        hidden = self.seg_head1(torch.cat([interp, own], dim=-1))
        if features:
            out["point_head"] = hidden
        out["seg_logits"] = self.seg_head2(hidden)
        out["event_logits"] = self.event_head(torch.cat([t.max(dim=1).values, t.mean(dim=1)], dim=-1))
        return out


def as_callables(model: PointNetSegmenter):
    """Batched callables for :mod:`ase_symdiag.pointcloud.diagnostics` (model cast to float64 copy):
    ``outputs(pos, dec) -> {seg_logits, seg_prob, event_logits}``,
    ``features(pos, dec) -> {layer: (G or N, d)}`` and the output rules."""
    import copy

    from ase_symdiag.backends.pointcloud import OutputRule

    m = copy.deepcopy(model).double().eval()

    def outputs(positions, decorations):
        out = m(positions, decorations)
        return {
            "seg_logits": out["seg_logits"],
            "seg_prob": torch.softmax(out["seg_logits"], dim=-1),
            "event_logits": out["event_logits"],
        }

    def features(positions, decorations):
        out = m(positions, decorations, features=True)
        return {k: v for k, v in out.items() if k not in ("seg_logits", "event_logits")}

    outputs.batched = True
    features.batched = True
    rules = {
        "seg_logits": OutputRule("point_scalar"),
        "seg_prob": OutputRule("point_scalar"),
        "event_logits": OutputRule("scalar"),
    }
    return outputs, features, rules


def save_model(model: PointNetSegmenter, path: str, extra: Optional[dict] = None) -> None:
    """state_dict + config in one .pt, and the config (plus ``extra``) as JSON next to
    it, both written atomically."""
    from ase_symdiag.report import atomic_save, write_json

    config = asdict(model.config)
    payload = {"config": config, "state_dict": model.state_dict(), "extra": extra or {}}
    atomic_save(path, lambda name: torch.save(payload, name))
    write_json(os.path.splitext(path)[0] + ".json", {"config": config, **(extra or {})})


def load_model(path: str) -> Tuple[PointNetSegmenter, dict]:
    """The model (eval mode) and its config dict from a file of :func:`save_model`;
    raises :class:`~ase_symdiag.errors.ModelError` for a missing or unsuitable file."""
    from ase_symdiag.errors import ModelError

    if not os.path.isfile(path):
        raise ModelError(f"PointNet weights '{path}' do not exist")
    if _is_torchscript(path):  # torch.load would warn, then fail
        raise ModelError(
            f"'{path}' is a TorchScript model (a metatomic model?), not PointNet weights "
            "written by scripts/train_pointnet.py"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        config = PointNetConfig(**payload["config"])
        model = PointNetSegmenter(config)
        model.load_state_dict(payload["state_dict"])
    except Exception as error:
        raise ModelError(f"could not read PointNet weights '{path}': {error}") from None
    model.eval()
    return model, payload["config"]


def _is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with compiled ``code/``)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
