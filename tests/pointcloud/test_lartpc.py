"""The toy LArTPC event generator: determinism, labels, point counts."""

import numpy as np
import pytest

from ase_symdiag.pointcloud.lartpc import OTHER, SHOWER, TRACK, generate_event, make_dataset, sample_points


def test_same_seed_same_event():
    a, b = generate_event(7), generate_event(7)
    for key in ("positions", "energy", "labels"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.event_label == b.event_label and a.info == b.info
    c = generate_event(8)
    assert len(c) != len(a) or not np.array_equal(c.positions, a.positions)


def test_labels_and_geometry():
    for seed in range(30):
        event = generate_event(seed)
        n = len(event)
        assert n > 0
        assert event.positions.shape == (n, 3) and event.energy.shape == (n,) and event.labels.shape == (n,)
        assert np.all(np.abs(event.positions) <= 50.0)
        assert np.all(event.energy > 0)
        assert set(np.unique(event.labels)) <= {TRACK, SHOWER, OTHER}
        if np.any(event.labels == SHOWER):
            assert event.event_label == 1
        assert event.event_label == int(event.info["showers"] > 0)
        assert event.n_tracks == event.info["muons"] + event.info["protons"]
        if event.n_tracks > 0 and np.sum(event.labels == TRACK) > 10:
            track = event.positions[event.labels == TRACK]
            d = np.linalg.norm(track[1:] - track[:-1], axis=1)
            assert 0.3 <= np.median(d) <= 1.0  # points ~ 0.5 cm apart along tracks
    labels = np.concatenate([generate_event(s).labels for s in range(30)])
    counts = np.bincount(labels, minlength=3)
    assert np.all(counts > 0.05 * counts.sum())  # all three classes are common


def test_bragg_peak_of_protons():
    from ase_symdiag.pointcloud.lartpc import _proton

    rng = np.random.default_rng(0)
    parts = []
    _proton(rng, np.zeros(3), np.array([0.0, 0.0, 1.0]), 20.0, parts)
    energy = parts[0][1]
    assert energy[-5:].mean() > 2 * energy[:5].mean()  # Bragg rise in the last 2.5 cm


def test_sample_points_and_dataset():
    rng = np.random.default_rng(0)
    event = generate_event(3)
    small = sample_points(event, 64, rng)
    assert len(small) == 64 and len(np.unique(small)) == 64
    big = sample_points(event, len(event) + 50, rng)
    assert len(big) == len(event) + 50 and set(big.tolist()) == set(range(len(event)))
    data = make_dataset(6, 128, seed=2)
    assert data["positions"].shape == (6, 128, 3) and data["energy"].shape == (6, 128, 1)
    assert data["labels"].shape == (6, 128) and data["event_label"].shape == (6,)
    prefix = make_dataset(3, 128, seed=2)
    for key in prefix:
        np.testing.assert_array_equal(prefix[key], data[key][:3])
    again = make_dataset(6, 128, seed=2)
    np.testing.assert_array_equal(again["positions"], data["positions"])
    with pytest.raises(ValueError):
        sample_points(type(event)(np.zeros((0, 3)), np.zeros(0), np.zeros(0, int), 0, 0), 4, rng)
