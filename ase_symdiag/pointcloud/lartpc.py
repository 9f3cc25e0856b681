"""Toy LArTPC-like detector events: decorated 3D point clouds with per-point labels.

A deterministic generator (numpy ``Generator`` seeded per event) of events in a
cubic detector of side ``box`` cm centred on the origin (coordinates in
``[-box/2, box/2]``), points about 0.5 cm apart (the step of the tracker):

* **muons** (label 0, track): long (30-150 cm, clipped to the box), slight multiple
  scattering, ~constant dE/dx of 2.1 MeV/cm with Landau-like (log-normal) noise;
  **delta rays** off the muon (label 2, other): short 1-5 cm electron stubs;
* **protons** (label 0, track): short (3-25 cm), more scattering, a Bragg-peak dE/dx
  rise ``~ (residual range)^-0.42`` at the stopping end;
* **electromagnetic showers** (label 1): a random binary cascade. A branch of energy
  E deposits 2.1 MeV/cm over a segment of ~Exp(X0 = 14 cm) length, then splits into
  two daughters (energy fraction U(0.15, 0.85), opening angle ~ 0.25 sqrt(30 MeV / E)
  rad); one daughter (photon-like) starts after a gap; branches below 8 MeV stop.
  The transverse spread grows along the shower (a cone);
* **noise** (label 2, other): uniform points in the box with 0.05-0.5 MeV.

Each point carries its deposited energy (MeV, with 10% Gaussian noise), a
semantic label ``0 = track, 1 = shower, 2 = other`` and the event has a label
``1`` if it contains at least one shower (``event.n_tracks`` is kept too).

Orientation (``anisotropic=True``, the default): a neutrino-like interaction vertex
in the inner detector emits its particles forward-peaked along the beam axis +z
(direction cosines ~ 1 - Exp(0.5), clipped), and cosmic muons (30% of events) come
down along -y. This is what makes rotational augmentation non-trivial: the data
distribution itself is not rotation invariant. ``anisotropic=False`` draws every
direction isotropically.

Fixed-size samples: :func:`sample_points` subsamples (without replacement) or
resamples (all points, plus duplicates drawn with replacement) to exactly N points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

TRACK, SHOWER, OTHER = 0, 1, 2
LABELS = ("track", "shower", "other")

#: step between deposits along a particle, cm
STEP = 0.5
#: minimum-ionising dE/dx in liquid argon, MeV/cm
DEDX_MIP = 2.1
#: radiation length of liquid argon, cm
X0 = 14.0


@dataclass
class Event:
    """One event: positions (M, 3) cm, energy (M,) MeV, labels (M,) int64."""

    positions: np.ndarray
    energy: np.ndarray
    labels: np.ndarray
    event_label: int  # 1 if the event contains a shower
    n_tracks: int
    info: Dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _isotropic(rng: np.random.Generator) -> np.ndarray:
    return _unit(rng.normal(size=3))


def _forward(rng: np.random.Generator, axis: np.ndarray, scale: float = 0.5) -> np.ndarray:
    """A direction with cos(angle to axis) = 1 - Exp(scale), clipped to [-1, 1]."""
    cos = float(np.clip(1.0 - rng.exponential(scale), -1.0, 1.0))
    phi = rng.uniform(0.0, 2 * np.pi)
    sin = np.sqrt(max(1.0 - cos * cos, 0.0))
    a = _unit(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = _unit(np.cross(a, helper))
    e2 = np.cross(a, e1)
    return cos * a + sin * (np.cos(phi) * e1 + np.sin(phi) * e2)


def _perpendicular(direction: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    helper = _isotropic(rng)
    e1 = _unit(np.cross(direction, helper))
    return e1, np.cross(direction, e1)


def _scatter(direction: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    e1, e2 = _perpendicular(direction, rng)
    a, b = rng.normal(scale=sigma, size=2)
    return _unit(direction + a * e1 + b * e2)


def _path(start: np.ndarray, direction: np.ndarray, length: float, sigma: float, rng) -> np.ndarray:
    """Points every STEP cm along a multiply-scattered line, (n, 3)."""
    n = max(int(length / STEP), 2)
    kicks = rng.normal(scale=sigma, size=(n, 3))
    dirs = np.empty((n, 3))
    d = _unit(direction)
    for i in range(n):  # random walk of the direction (n <= a few hundred)
        d = _unit(d + kicks[i] - np.dot(kicks[i], d) * d)
        dirs[i] = d
    return start + STEP * np.cumsum(dirs, axis=0)


def _inside(points: np.ndarray, half: float) -> np.ndarray:
    return np.all(np.abs(points) <= half, axis=1)


def _landau(rng, n: int, mean: float) -> np.ndarray:
    """Skewed positive fluctuations with the given mean (log-normal, sigma 0.3)."""
    return mean * rng.lognormal(mean=-0.045, sigma=0.3, size=n)


def _muon(rng, start, direction, length, out: List, info: Dict[str, int]) -> None:
    pts = _path(start, direction, length, 0.004, rng)
    out.append((pts, _landau(rng, len(pts), DEDX_MIP * STEP), TRACK))
    # delta rays: ~1 per 15 cm
    for i in np.nonzero(rng.random(len(pts)) < STEP / 15.0)[0]:
        d = _unit(_scatter(pts[i] - pts[max(i - 1, 0)] if i > 0 else direction, 1.0, rng))
        stub = _path(pts[i], d, rng.uniform(1.0, 5.0), 0.15, rng)
        out.append((stub, _landau(rng, len(stub), DEDX_MIP * STEP), OTHER))
        info["delta_rays"] = info.get("delta_rays", 0) + 1


def _proton(rng, start, direction, length, out: List) -> None:
    pts = _path(start, direction, length, 0.03, rng)
    residual = np.maximum(length - STEP * np.arange(1, len(pts) + 1), 0.25)
    dedx = np.minimum(DEDX_MIP * 2.5 * (residual / 5.0) ** -0.42, 35.0)  # Bragg rise
    out.append((pts, _landau(rng, len(pts), 1.0) * dedx * STEP, TRACK))


def _shower(rng, start, direction, energy, out: List, max_branches: int = 200) -> None:
    stack = [(np.asarray(start, float), _unit(direction), float(energy), 0.0)]
    branches = 0
    pieces = []
    while stack and branches < max_branches:
        origin, d, e, depth = stack.pop()
        branches += 1
        length = min(rng.exponential(X0 * 0.5) + 1.0, e / DEDX_MIP)
        pts = _path(origin, d, length, 0.05, rng)
        spread = 0.1 + 0.04 * (depth + np.arange(len(pts)) * STEP)  # cone: grows with depth
        pts = pts + rng.normal(size=pts.shape) * spread[:, None]
        deposited = min(DEDX_MIP * STEP * len(pts), e)
        pieces.append((pts, _landau(rng, len(pts), deposited / len(pts))))
        remaining = e - deposited
        end = pts[-1]
        if remaining < 8.0:
            continue
        fraction = rng.uniform(0.15, 0.85)
        angle = 0.25 * np.sqrt(30.0 / remaining)
        for k, share in enumerate((fraction, 1.0 - fraction)):
            child = _scatter(d, angle, rng)
            gap = rng.exponential(3.0) if k == 1 else 0.0  # photon-like daughter converts later
            stack.append((end + gap * child, child, share * remaining, depth + length + gap))
    if pieces:
        pts = np.concatenate([p for p, _ in pieces])
        out.append((pts, np.concatenate([e for _, e in pieces]), SHOWER))


def generate_event(seed, *, box: float = 100.0, anisotropic: bool = True, noise: float = 20.0) -> Event:
    """One event from ``seed`` (an int, a sequence of ints, or a numpy Generator).

    ``noise`` is the mean number of uniform noise points.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    half = box / 2.0
    beam = np.array([0.0, 0.0, 1.0])
    direction = (lambda: _forward(rng, beam)) if anisotropic else (lambda: _isotropic(rng))
    vertex = rng.uniform(-0.6 * half, 0.6 * half, size=3)
    parts: List = []
    info: Dict[str, int] = {}
    n_muons = int(rng.choice([0, 1, 1, 2]))
    n_protons = int(rng.integers(0, 4))
    n_showers = int(rng.choice([0, 0, 1, 2]))
    if n_muons + n_protons + n_showers == 0:
        n_protons = 1
    for _ in range(n_muons):
        _muon(rng, vertex, direction(), rng.uniform(30.0, 150.0), parts, info)
    for _ in range(n_protons):
        _proton(rng, vertex, direction(), rng.uniform(3.0, 25.0), parts)
    for _ in range(n_showers):
        d = direction()
        start = vertex + d * rng.exponential(5.0)  # photon conversion distance
        _shower(rng, start, d, rng.uniform(50.0, 400.0), parts)
    cosmic = rng.random() < 0.3
    if cosmic:  # a through-going cosmic muon from the top face
        top = np.array([rng.uniform(-half, half), half, rng.uniform(-half, half)])
        down = _forward(rng, np.array([0.0, -1.0, 0.0]), 0.3) if anisotropic else _isotropic(rng)
        _muon(rng, top, down, 2 * box, parts, info)
    n_noise = int(rng.poisson(noise))
    if n_noise:
        parts.append((rng.uniform(-half, half, size=(n_noise, 3)), rng.uniform(0.05, 0.5, n_noise), OTHER))

    positions = np.concatenate([p for p, _, _ in parts])
    energy = np.concatenate([e for _, e, _ in parts])
    labels = np.concatenate([np.full(len(p), lab, dtype=np.int64) for p, _, lab in parts])
    keep = _inside(positions, half)
    energy = energy * (1.0 + 0.1 * rng.normal(size=energy.shape))
    energy = np.clip(energy, 0.01, None)
    info.update(muons=n_muons + int(cosmic), protons=n_protons, showers=n_showers, noise=n_noise)
    return Event(
        positions=positions[keep],
        energy=energy[keep],
        labels=labels[keep],
        event_label=int(n_showers > 0),
        n_tracks=n_muons + n_protons + int(cosmic),
        info=info,
    )


def sample_points(event: Event, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (n_points,) into ``event``: a subset without replacement when the event
    has at least ``n_points`` points, else every point plus duplicates drawn with
    replacement."""
    m = len(event)
    if m == 0:
        raise ValueError("empty event")
    if m >= n_points:
        return np.sort(rng.choice(m, size=n_points, replace=False))
    return np.concatenate([np.arange(m), rng.choice(m, size=n_points - m, replace=True)])


def make_dataset(
    n_events: int, n_points: int = 512, seed: int = 0, *, anisotropic: bool = True, **kwargs
) -> Dict[str, np.ndarray]:
    """``n_events`` events resampled to ``n_points`` each.

    Event i is generated from ``default_rng([seed, i])``, so a prefix of a larger
    data set is identical to a smaller one. Returns float32 ``positions`` (E, N, 3)
    cm, ``energy`` (E, N, 1) MeV, int64 ``labels`` (E, N), ``event_label`` (E,),
    ``n_tracks`` (E,) and ``n_raw`` (E,) (points before resampling).
    """
    positions = np.empty((n_events, n_points, 3), np.float32)
    energy = np.empty((n_events, n_points, 1), np.float32)
    labels = np.empty((n_events, n_points), np.int64)
    event_label = np.empty(n_events, np.int64)
    n_tracks = np.empty(n_events, np.int64)
    n_raw = np.empty(n_events, np.int64)
    for i in range(n_events):
        rng = np.random.default_rng([seed, i])
        event = generate_event(rng, anisotropic=anisotropic, **kwargs)
        index = sample_points(event, n_points, rng)
        positions[i] = event.positions[index]
        energy[i, :, 0] = event.energy[index]
        labels[i] = event.labels[index]
        event_label[i] = event.event_label
        n_tracks[i] = event.n_tracks
        n_raw[i] = len(event)
    return {
        "positions": positions,
        "energy": energy,
        "labels": labels,
        "event_label": event_label,
        "n_tracks": n_tracks,
        "n_raw": n_raw,
    }
