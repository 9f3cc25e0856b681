"""Plain-text tables and atomic JSON writes shared by every report."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Callable, Sequence


def format_number(value: Any, digits: int = 3) -> str:
    """Short human form: ``-`` for None, scientific for very small/large floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0.0:
            return "0"
        if abs(value) < 1e-3 or abs(value) >= 1e5:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned others, a rule under the header."""
    cells = [[format_number(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(values):
        parts = [values[0].ljust(widths[0])]
        parts += [v.rjust(w) for v, w in zip(values[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def atomic_write(path: str, writer: Callable[[str], None]) -> None:
    """Write ``path`` atomically: ``writer(tmp)`` fills a temporary file next to it,
    which then replaces ``path`` (an interrupted write never leaves a partial file,
    and its temporary file is removed, whatever interrupted it). A symbolic link is
    written through: its target is replaced and the link kept."""
    path = str(path)
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        os.close(fd)
        writer(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as JSON atomically, NaN and infinities as null."""

    def writer(tmp: str) -> None:
        with open(tmp, "w") as handle:
            json.dump(_clean(data), handle, indent=2)
            handle.write("\n")

    atomic_write(path, writer)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    return value


def atomic_savefig(figure, path: str, **kwargs) -> None:
    """Save a matplotlib figure atomically."""
    dpi = kwargs.pop("dpi", 120)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=dpi, **kwargs))
