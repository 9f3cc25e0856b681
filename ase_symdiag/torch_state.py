"""torch's process-wide settings, changed for a block and restored after it.

The library never leaves ``torch.set_num_threads`` or torch's global random generator
changed behind a caller's back: training and model construction that need a thread
count or a seed use these context managers (the command line may set process state
itself; a Python caller of the library keeps its own).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (``None``: unchanged), the previous
    count restored after it."""
    import torch

    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def torch_seeded(seed: Optional[int]) -> Iterator[None]:
    """Torch's global CPU random generator seeded with ``seed`` inside the block
    (``None``: not reseeded), and its state before the block restored after it.

    Only the CPU generator: the CUDA generators are neither seeded nor touched (what is
    built or trained under this is built on the CPU).
    """
    import torch

    state = torch.random.get_rng_state()
    try:
        if seed is not None:
            torch.random.default_generator.manual_seed(int(seed))
        yield
    finally:
        torch.random.set_rng_state(state)
