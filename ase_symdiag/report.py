"""Plain-text tables and atomic JSON writes shared by every report."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
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
    written through: its target is replaced and the link kept.

    An ``OSError`` that names no file (a failed ``write``: a full disk, a quota) is
    raised again naming ``path``.

    Permissions: a replaced file keeps its mode (a private 0600 report stays
    private); a new file gets ``0666`` less the process umask, as ``open`` would give.
    """
    path = str(path)
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        os.close(fd)
        writer(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            # a failed write() names no file: name the one the user asked for
            raise OSError(error.errno, error.strerror, path) from error
        raise


def atomic_save(path: str, save: Callable[[str], None]) -> None:
    """``save(name)`` serialises into memory, then :func:`atomic_write` writes the bytes.

    For ``torch.save`` and TorchScript ``save``, which take a file name: their C++
    writers report a full disk or an exceeded quota as ``RuntimeError('... unexpected
    pos ...')``, or abort the whole process from a destructor (TorchScript). Here they
    write to an anonymous in-memory file (``memfd``, Linux; elsewhere a temporary file
    of the system's temporary folder), and the disk is written from Python, whose
    failures are ``OSError`` (ENOSPC, EDQUOT, EFBIG), reported by the command line in
    one line.
    """

    def writer(tmp: str) -> None:
        data = _serialised(save)
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write(path, writer)


def _serialised(save: Callable[[str], None]) -> bytes:
    """The bytes ``save(name)`` writes to the file ``name``."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("ase-symdiag-save")
        try:
            try:
                save(f"/proc/self/fd/{fd}")
            except RuntimeError:
                # the one way to fail writing to memory: the file size limit (ulimit -f)
                if os.fstat(fd).st_size >= _file_size_limit():
                    raise OSError(errno.EFBIG, os.strerror(errno.EFBIG) + " (the file size limit, ulimit -f)") from None
                raise
            with open(f"/proc/self/fd/{fd}", "rb") as handle:
                return handle.read()
        finally:
            os.close(fd)
    fd, name = tempfile.mkstemp(prefix="ase-symdiag-save-")
    os.close(fd)
    try:
        save(name)
        with open(name, "rb") as handle:
            return handle.read()
    finally:
        os.unlink(name)


def _file_size_limit() -> float:
    """Bytes: the process's file size limit (``RLIMIT_FSIZE``), infinite when none."""
    try:
        import resource
    except ImportError:  # not POSIX
        return math.inf
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return math.inf if soft == resource.RLIM_INFINITY else float(soft)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux:
    ``/proc/self/status``); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
