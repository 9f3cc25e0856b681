"""Regenerate the command transcripts in README.md, so that they cannot go stale.

Each transcript in README.md sits between two markers::

    <!-- transcript: ase-symdiag check models/morse-broken-l2.pt ... -->
    ```
    ...output...
    ```
    <!-- end transcript -->

This script runs every marked command (in-process, from the repository root, with a
temporary folder as working directory for the files they write), and rewrites the
block between the markers with what the command printed (stdout and stderr, as a user
sees them, with the exit status appended when it is not 0).

    python scripts/make_readme.py           # rewrite README.md
    python scripts/make_readme.py --check   # exit 1 if a transcript is out of date
                                            # (timings and round-off excepted; tests/test_readme.py)

``--check`` compares each transcript exactly, except wall-clock timings and
round-off: the residuals of an exactly averaged model (about 1e-11 meV/atom, 1e-13
eV/Å) differ in their digits from machine to machine, so any number written in
scientific notation below :data:`ROUND_OFF` matches any other such number (see
:func:`same_transcript`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import re
import shlex
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- transcript: (?P<command>.+?) -->\n)```\n.*?```\n(<!-- end transcript -->)", re.S)
#: wall-clock timings printed by the commands: text --check does not compare
TIMING = re.compile(r"measured: [0-9.]+ ms")
#: numbers in scientific notation (format_number prints every non-zero value below 1e-3
#: so), and a bare 0 (format_number's zero: a clipped round-off variance can be exactly 0)
SMALL_NUMBER = re.compile(r"(?<![\w.:-])(?:-?\d\.\d+e[+-]\d+|0)(?![\w.:])")
#: a number below this (in the transcripts' units: meV/atom, eV/Å, GPa, or a ratio to a
#: tolerance) is float64 round-off: the averaged residuals printed are 1e-14 to 3e-10,
#: every physical value is above 1e-4
ROUND_OFF = 1e-8
#: column padding and table rules, whose widths follow the printed numbers
PADDING = re.compile(r"  +|--+")


def _normalised(text: str) -> str:
    """``text`` with timings and round-off numbers replaced by placeholders, and column
    padding and rules by one fixed token (their widths follow the numbers)."""
    text = TIMING.sub("measured: <t> ms", text)
    text = SMALL_NUMBER.sub(lambda m: "<round-off>" if abs(float(m.group(0))) < ROUND_OFF else m.group(0), text)
    return PADDING.sub(lambda m: "  " if m.group(0)[0] == " " else "--", text)


def same_transcript(old: str, new: str) -> bool:
    """Whether ``new`` says what ``old`` says: identical except for wall-clock timings,
    round-off (any number below ``ROUND_OFF`` in scientific notation, or 0, matches any
    other) and the widths of table columns."""
    return _normalised(old) == _normalised(new)


def _rooted(argument: str) -> str:
    """``argument`` with an input path (``models/x.pt``, or the path of a model spec
    ``PREFIX:PATH`` such as ``orb-v3-direct:models/x.ckpt``) made absolute under ROOT;
    options and anything that is not an existing path are kept as they are."""
    if argument.startswith("-"):
        return argument
    if (ROOT / argument).exists():
        return str(ROOT / argument)
    prefix, colon, path = argument.partition(":")
    if colon and path and (ROOT / path).exists():
        return f"{prefix}:{ROOT / path}"
    return argument


def _initialise_warp() -> None:
    """Initialise NVIDIA Warp (imported by torch-sim's kernels when an Orb or MACE model
    loads) before a command runs, so that its one-time greeting (version, CUDA driver,
    kernel cache folder: different on every machine) goes to this script's terminal and
    not into a transcript."""
    try:
        import warp
    except ImportError:
        return
    warp.init()


def run_command(command: str) -> str:
    """What ``command`` (``ase-symdiag ...``) prints, run in-process from the repository root."""
    import torch

    from ase_symdiag.cli import main

    torch.set_num_threads(1)
    argv = shlex.split(command)
    if argv[0] != "ase-symdiag":
        raise SystemExit(f"only ase-symdiag commands can be transcribed, got {argv[0]!r}")
    _initialise_warp()
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as scratch:
        # relative outputs (report.json, *.pt, *.png) go to a scratch folder; inputs
        # are named relative to the repository root
        argv = [_rooted(a) for a in argv[1:]]
        cwd = os.getcwd()
        os.chdir(scratch)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                status = main(argv)
        finally:
            os.chdir(cwd)
    text = out.getvalue().replace(str(ROOT) + os.sep, "")
    if status:
        text += f"(exit status {status})\n"
    return text


def regenerate(text: str, only: str | None = None) -> str:
    def replace(match: re.Match) -> str:
        command = match.group("command")
        if only is not None and only not in command:
            return match.group(0)
        print(f"running: {command}", file=sys.stderr)
        return f"{match.group(1)}```\n{run_command(command)}```\n{match.group(3)}"

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    parser.add_argument("--only", default=None, help="only commands containing this text")
    args = parser.parse_args(argv)
    old = README.read_text()
    new = regenerate(old, args.only)
    if args.check:
        if not same_transcript(old, new):
            print("README.md transcripts are out of date: run python scripts/make_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
