"""Library calls leave torch's process-wide state as they found it (issue 20): the thread
count and the global random generator."""

import pytest
import torch

from ase_symdiag.torch_state import torch_seeded, torch_threads


@pytest.fixture
def torch_state():
    """One thread and a known generator state, restored after the test."""
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    torch.set_num_threads(1)
    torch.random.default_generator.manual_seed(1234)
    yield lambda: (torch.get_num_threads(), torch.random.get_rng_state())
    torch.set_num_threads(threads)
    torch.random.set_rng_state(state)


def test_torch_threads_sets_and_restores(torch_state):
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with pytest.raises(RuntimeError), torch_threads(2):
        raise RuntimeError("interrupted")
    assert torch.get_num_threads() == 1


def test_torch_seeded_seeds_and_restores(torch_state):
    _, before = torch_state()
    with torch_seeded(7):
        first = torch.rand(3)
    with torch_seeded(7):
        second = torch.rand(3)
    assert torch.equal(first, second)
    assert torch.equal(torch_state()[1], before)


def test_pointnet_construction_leaves_the_global_generator_alone(torch_state):
    """PointNetSegmenter.__init__ called torch.manual_seed(config.seed)."""
    from ase_symdiag.pointcloud.pointnet import PointNetConfig, PointNetSegmenter

    config = PointNetConfig(n_points=64, n_groups=4, group_size=8, dim=16, depth=1, heads=2, seed=3)
    _, before = torch_state()
    a = PointNetSegmenter(config)
    assert torch.equal(torch_state()[1], before)
    torch.rand(5)  # a different caller state gives the same parameters
    b = PointNetSegmenter(config)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    # the parameters the shipped models were built with: the CPU generator seeded with config.seed
    torch.random.default_generator.manual_seed(config.seed)
    expected = torch.nn.Linear(4, 64)
    assert torch.equal(a.patch_mlp1[0].weight, expected.weight)


def test_pointcloud_command_restores_the_thread_count(torch_state, tmp_path):
    """cli/pointcloud.py called torch.set_num_threads(1) and left it (main() from Python)."""
    from repo import ROOT

    from ase_symdiag.cli.app import main

    torch.set_num_threads(2)
    model = ROOT / "models" / "pointnet"
    paths = sorted(model.glob("*.pt"))
    assert paths
    assert main(["pointcloud", str(paths[0]), "--events", "1", "--rotations", "2", "--lmax", "1"]) == 0
    assert torch.get_num_threads() == 2
