"""The progress bar the drivers show on request (tqdm, imported only when shown)."""

from __future__ import annotations

from typing import Any, Optional


def progress_bar(total: int, enabled: bool, *, desc: str, unit: str) -> Optional[Any]:
    """A tqdm bar of ``total`` steps named ``desc`` counting ``unit``, or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)
