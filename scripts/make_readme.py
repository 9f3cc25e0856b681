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
                                            # (timings excepted; tests/test_readme.py)
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
#: wall-clock timings printed by the commands: the only text --check does not compare
TIMING = re.compile(r"measured: [0-9.]+ ms")


def run_command(command: str) -> str:
    """What ``command`` (``ase-symdiag ...``) prints, run in-process from the repository root."""
    import torch

    from ase_symdiag.cli import main

    torch.set_num_threads(1)
    argv = shlex.split(command)
    if argv[0] != "ase-symdiag":
        raise SystemExit(f"only ase-symdiag commands can be transcribed, got {argv[0]!r}")
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as scratch:
        # relative outputs (report.json, *.pt, *.png) go to a scratch folder; inputs
        # are named relative to the repository root
        argv = [str(ROOT / a) if (ROOT / a).exists() and not a.startswith("-") else a for a in argv[1:]]
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
        if TIMING.sub("measured: <t> ms", new) != TIMING.sub("measured: <t> ms", old):
            print("README.md transcripts are out of date: run python scripts/make_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
