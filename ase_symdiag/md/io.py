"""Files of an MD run: the per-variant log, trajectory and checkpoint, and resuming.

Per variant ``NAME`` in the output directory (see :func:`variant_paths`):

- ``NAME.traj``: ASE trajectory, appended at every record;
- ``NAME.log``: one line per record (``#`` header, then the :data:`COLUMNS` as
  whitespace-separated numbers written with full precision);
- ``NAME.state.json``: checkpoint (step, atoms with momenta, thermostat and
  random-generator state, and how many trajectory frames and log lines belong to it);
- ``NAME.json``: the summary.

Whole-file rewrites go through :func:`ase_symdiag.report.atomic_write`, so an
interruption never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
from ase import Atoms

from ase_symdiag.md.constraints import describe, restore
from ase_symdiag.md.errors import MDError
from ase_symdiag.md.observables import COLUMNS
from ase_symdiag.report import atomic_write, write_json

#: file kinds of one variant and their endings
FILE_KINDS = (("trajectory", ".traj"), ("log", ".log"), ("state", ".state.json"), ("summary", ".json"))

#: the lock file an MD run holds in its output directory
LOCK_FILE = ".md.lock"


@contextlib.contextmanager
def run_lock(out: Optional[str]) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``out/.md.lock`` for the run (no-op when
    ``out`` is None); a second run into the same directory is refused in one line
    instead of writing its files beside the first one's. The lock goes with the
    process (no stale lock after a crash)."""
    if not out:
        yield
        return
    import fcntl

    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, LOCK_FILE)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MDError(
                f"output directory '{out}' is in use by another md run (lock {path} is held); "
                f"wait for it or use another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def variant_paths(out: str, name: str) -> Dict[str, str]:
    """``{"trajectory", "log", "state", "summary"} -> path`` of variant ``name`` in ``out``."""
    return {key: os.path.join(out, f"{name}{ext}") for key, ext in FILE_KINDS}


def remove_outputs(paths: Dict[str, str]) -> None:
    """Delete the files of a previous run of a variant (a fresh start)."""
    for key, _ in FILE_KINDS:
        if os.path.exists(paths[key]):
            os.unlink(paths[key])


def _fmt(value: Any) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


def log_header(prefix: Sequence[str] = ()) -> str:
    """The first line of a log file (with its newline): ``prefix`` columns (the batched
    engine's replica and temperature), then :data:`COLUMNS`."""
    return "# " + " ".join(tuple(prefix) + COLUMNS) + "\n"


def log_line(row: Dict[str, float], prefix: Sequence[Any] = ()) -> str:
    """One record as a log line (with its newline), after the values of the ``prefix``
    columns; floats round-trip exactly."""
    return " ".join([_fmt(v) for v in prefix] + [_fmt(row[c]) for c in COLUMNS]) + "\n"


def parse_log_line(line: str, columns: Sequence[str] = COLUMNS) -> Optional[Dict[str, float]]:
    """The record of a log line with ``columns`` (``step`` an int), or None for a line
    cut short by an interruption."""
    values = line.split()
    if len(values) != len(columns):
        return None
    row = {name: float(v) for name, v in zip(columns, values)}
    row["step"] = int(row["step"])
    return row


def read_log(path: str) -> List[Dict[str, float]]:
    """The records of a log file ([] if it does not exist); a line cut short ends it."""
    rows: List[Dict[str, float]] = []
    if not os.path.exists(path):
        return rows
    with open(path) as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            row = parse_log_line(line)
            if row is None:
                break  # a line cut by an interruption
            rows.append(row)
    return rows


def write_log(path: str, rows: Sequence[Dict[str, float]]) -> None:
    """Rewrite a log file with a header and ``rows`` (atomically)."""

    def writer(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(log_header())
            for row in rows:
                handle.write(log_line(row))

    atomic_write(path, writer)


def truncate_trajectory(path: str, n_frames: int) -> None:
    """Keep the first ``n_frames`` frames of an ASE trajectory (atomically); refuses
    (:class:`MDError`) a trajectory with fewer frames than the checkpoint counts
    (deleted or replaced: resuming would leave a hole in it)."""
    from ase.io.trajectory import Trajectory

    if not os.path.exists(path):
        if n_frames:
            raise MDError(f"--resume: trajectory '{path}' is missing but the checkpoint counts {n_frames} frames "
                          f"in it; restore it or start afresh without --resume")
        return
    with Trajectory(path) as reader:
        if len(reader) == n_frames:
            return
        if len(reader) < n_frames:
            raise MDError(f"--resume: trajectory '{path}' has {len(reader)} frames but the checkpoint counts "
                          f"{n_frames}; restore it or start afresh without --resume")
        frames = [reader[i] for i in range(min(n_frames, len(reader)))]

    def writer(tmp: str) -> None:
        with Trajectory(tmp, "w") as trajectory:
            for frame in frames:
                trajectory.write(frame)

    atomic_write(path, writer)


def check_log_rows(path: str, found: int, expected: int) -> None:
    """Refuse (:class:`MDError`) to resume when the log ``path`` holds fewer than the
    ``expected`` records of the checkpoint (deleted or cut: the summary would cover
    only part of the run)."""
    if found < expected:
        what = "is missing" if not os.path.exists(path) else f"has {found} records"
        raise MDError(f"--resume: log '{path}' {what} but the checkpoint counts {expected}; "
                      f"restore it or start afresh without --resume")


def atoms_to_state(atoms: Atoms) -> Dict[str, Any]:
    """JSON-ready numbers, positions (Å), momenta (ASE units), masses (amu), cell (Å),
    pbc and constraints (:func:`ase_symdiag.md.constraints.describe`)."""
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "momenta": atoms.get_momenta().tolist(),
        "masses": atoms.get_masses().tolist(),
        "cell": np.asarray(atoms.cell).tolist(),
        "pbc": atoms.pbc.tolist(),
        "constraints": describe(atoms),
    }


def atoms_from_state(state: Dict[str, Any]) -> Atoms:
    """Inverse of :func:`atoms_to_state`."""
    atoms = Atoms(
        numbers=state["numbers"],
        positions=state["positions"],
        cell=state["cell"],
        pbc=state["pbc"],
        masses=state["masses"],
    )
    atoms.set_momenta(np.asarray(state["momenta"], dtype=float), apply_constraint=False)
    atoms.set_constraint(restore(state.get("constraints", [])))
    return atoms


def atoms_fingerprint(atoms: Atoms) -> str:
    """SHA-256 of the numbers, positions, momenta, masses, cell and pbc of ``atoms`` (exact bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for array in (atoms.numbers, atoms.positions, atoms.get_momenta(), atoms.get_masses(), np.asarray(atoms.cell), atoms.pbc):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def file_fingerprint(path: str) -> str:
    """SHA-256 of a file's bytes."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def calculator_fingerprint(calc: Any) -> str:
    """What identifies the model behind a calculator: for ase-symdiag's, the model file's
    SHA-256 (or its source), dtype and energy variant; for any other ASE calculator, its
    class and parameters."""
    handle = getattr(calc, "handle", None)
    if handle is not None:
        source = str(getattr(handle, "source", "<object>"))
        identity = file_fingerprint(source) if os.path.isfile(source) else source
        return f"{identity} {handle.dtype} variant={getattr(handle, 'variant', None)}"
    try:
        parameters = json.dumps(calc.todict(), sort_keys=True, default=str)
    except Exception:  # noqa: BLE001 - a calculator without serialisable parameters
        parameters = ""
    return f"{type(calc).__name__} {parameters}"


def rng_state(rng: np.random.Generator) -> Dict[str, Any]:
    """The bit-generator state of ``rng`` with plain ints (JSON-ready; assignable back)."""
    state = rng.bit_generator.state
    return {k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in state.items()}


def write_checkpoint(path: str, *, name: str, step: int, log_rows: int, frames: int, finished: bool,
                     failure: Any, transferred_energy: float, rng: np.random.Generator, atoms: Atoms,
                     settings: Optional[Dict[str, Any]] = None) -> None:
    """Write the resume state of a variant atomically.

    ``log_rows`` / ``frames``: how many log records and trajectory frames belong to
    this state; ``transferred_energy``: eV exchanged with the thermostat so far;
    ``settings``: what a resumed run must share with this one
    (:func:`ase_symdiag.md.runner.run_settings`).
    """
    write_json(path, {
        "settings": settings,
        "variant": name,
        "step": step,
        "log_rows": log_rows,
        "frames": frames,
        "finished": finished,
        "failure": failure,
        "transferred_energy": transferred_energy,
        "rng": rng_state(rng),
        "atoms": atoms_to_state(atoms),
    })


def read_checkpoint(path: str) -> Dict[str, Any]:
    """A state written by :func:`write_checkpoint` (``"atoms"`` still as a dict)."""
    with open(path) as handle:
        return json.load(handle)
