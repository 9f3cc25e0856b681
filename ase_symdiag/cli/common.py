"""What every ``ase-symdiag`` command shares: the parser, argument types, progress bars.

Argument types validate values where they are parsed, so a bad value (``-n 0``,
``--tolerance nan``, ``--plot out.xyz``) is one line and exit status 2, like every
other bad input; exit status 1 is reserved for a threshold that was exceeded.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable, Mapping, NoReturn, Optional

from ase_symdiag.errors import UsageError
from ase_symdiag.o3.quadrature import MAX_DEGREE

#: file endings matplotlib can write (checked before any work is done)
PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``ase-symdiag CMD: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind: Callable, name: str, test: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got '{text}'") from None
        if isinstance(value, float) and not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"expected {name}, got '{text}'")
        return value

    parse.__name__ = name
    return parse


positive_int = _number(int, "a positive integer", lambda v: v > 0)
nonnegative_int = _number(int, "an integer >= 0", lambda v: v >= 0)
positive_float = _number(float, "a finite number > 0", lambda v: v > 0)
nonnegative_float = _number(float, "a finite number >= 0", lambda v: v >= 0)
finite_float = _number(float, "a finite number", lambda v: True)


def output_file(text: str) -> str:
    """A file to write: not a directory, its folder exists and is writable, its name fits."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"'{text}' is a directory, expected a file name")
    problem = unwritable(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def output_directory(text: str) -> str:
    """A directory to write into: may exist (as a writable directory), else its parent
    exists and is writable and its name fits."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"'{text}' exists and is not a directory")
    problem = unwritable(text, directory=True)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def unwritable(path: str, directory: bool = False, create_folders: bool = False) -> Optional[str]:
    """Why ``path`` cannot be written (one line), or None: its folder is missing or not
    writable, or a name in it (or the temporary name an atomic write gives a file) is
    longer than the file system allows.

    ``directory``: ``path`` is a folder to write into (created if missing, its parent
    must exist); ``create_folders``: missing folders on the way are created by the
    writer, so only the nearest existing one must be writable.
    """
    path = os.path.abspath(path)
    existing = path if directory else os.path.dirname(path)
    while not os.path.isdir(existing):
        if os.path.exists(existing):
            return f"'{existing}' is not a folder"
        if not create_folders and existing != path:
            return f"folder '{existing}' does not exist"
        existing = os.path.dirname(existing)
    name_max = _pathconf(existing, "PC_NAME_MAX", 255)
    names = [] if path == existing else os.path.relpath(path, existing).split(os.sep)
    for name in names:
        if len(os.fsencode(name)) > name_max:
            return f"file name too long: '{name[:40]}...' ({len(os.fsencode(name))} bytes, at most {name_max} here)"
    ending = os.path.splitext(names[-1])[1] if names and not directory else ""
    if len(os.fsencode(ending)) + len(".tmp-xxxxxxxx") > name_max:  # the temporary file of an atomic write
        return f"file name ending too long: '{ending[:40]}...' (the temporary file '.tmp-XXXXXXXX<ending>' must fit in {name_max} bytes)"
    path_max = _pathconf(existing, "PC_PATH_MAX", 4096)
    if len(os.fsencode(path)) + len(".tmp-xxxxxxxx") >= path_max:
        return f"path too long: '{path[:40]}...' ({len(os.fsencode(path))} bytes, at most {path_max - 14} here)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"folder '{existing}' is not writable"
    return None


def _pathconf(folder: str, name: str, default: int) -> int:
    try:
        value = os.pathconf(folder, name)
    except (OSError, ValueError, AttributeError):  # not POSIX, or no limit known
        return default
    return value if value > 0 else default


def check_outputs(outputs: Mapping[str, Optional[str]], inputs: Mapping[str, Optional[str]]) -> None:
    """Refuse, before any work, outputs that collide: two outputs that are the same file,
    or an output that is one of the command's inputs (model, structures, checkpoint,
    config, a resume folder), symbolic and hard links seen through.

    ``outputs``: ``{option: path}`` of what the command will write; ``inputs``:
    ``{what: path}`` of what it reads (None entries are ignored). Raises
    :class:`~ase_symdiag.errors.UsageError` naming both.
    """
    given_outputs = [(flag, path) for flag, path in outputs.items() if path is not None]
    given_inputs = [(what, path) for what, path in inputs.items() if path is not None]
    for i, (flag, path) in enumerate(given_outputs):
        for other, other_path in given_outputs[:i]:
            if same_file(path, other_path):
                raise usage(f"{flag} '{path}' is the same file as {other} '{other_path}': give each output its own name")
        for what, input_path in given_inputs:
            if same_file(path, input_path):
                raise usage(f"{flag} '{path}' would overwrite the {what} '{input_path}': write it elsewhere")


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (links resolved; hard links too)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return False


def quadrature_spec(text: str):
    """A quadrature name or degree (``3``, ``O``, ``lebedev:3``), checked at parsing."""
    from ase_symdiag.errors import SymDiagError
    from ase_symdiag.o3.quadrature import parse_quadrature

    try:
        return parse_quadrature(text)
    except SymDiagError as error:
        raise argparse.ArgumentTypeError(" ".join(str(error).split())) from None


#: the largest --lmax a command accepts: the spectrum needs a quadrature exact to 2*LMAX,
#: and ``o3.quadrature.MAX_DEGREE`` is the largest degree that builds in reasonable time
MAX_LMAX = MAX_DEGREE // 2


def lmax_type(text: str) -> int:
    """An --lmax: an integer from 0 to MAX_LMAX."""
    value = nonnegative_int(text)
    if value > MAX_LMAX:
        raise argparse.ArgumentTypeError(f"--lmax {value} is beyond what can be computed in reasonable time (at most {MAX_LMAX})")
    return value


def check_orientations(text: str) -> int:
    """0 (no check) or at least 2 Haar-random check orientations."""
    value = nonnegative_int(text)
    if value == 1:
        raise argparse.ArgumentTypeError("--check-orientations must be 0 or >= 2 (a standard error needs two)")
    return value


def plot_file(text: str) -> str:
    """An image file matplotlib can write, judged by its ending."""
    if not text.lower().endswith(PLOT_FORMATS):
        raise argparse.ArgumentTypeError(f"'{text}': unknown image format (use one of {', '.join(PLOT_FORMATS)})")
    return output_file(text)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """[--energy-variant] [--extensions]: which energy variant of the model, where its extensions are."""
    p.add_argument(
        "--energy-variant", dest="variant", default=None, metavar="NAME",
        help="energy variant of a multi-variant model (its 'energy/<variant>' output, e.g. pbe)",
    )
    p.add_argument("--extensions", metavar="DIR", type=existing_directory, default=None,
                   help="directory of the TorchScript extensions the model needs")


#: what every command's MODEL argument accepts (ase_symdiag.backends.loading)
MODEL_HELP = (
    "the model: a metatomic file (.pt), orb-v3-direct:CKPT or orb-v3-conservative:CKPT "
    "(a local orb state_dict), mace:FILE (or FILE.model), or package.module:callable returning "
    "an ASE calculator or a TorchSim model; nothing is downloaded"
)


def load_handle(args: argparse.Namespace, path=None):
    """The model named by ``path`` (default ``args.model``), any family
    (:func:`~ase_symdiag.backends.loading.load_model`), with the command's ``--device``,
    ``--dtype``, ``--energy-variant`` and ``--extensions``: a metatomic
    :class:`ModelHandle`, a TorchSim model or an ASE calculator."""
    from ase_symdiag.backends.loading import load_model

    return load_model(
        args.model if path is None else path,
        device=getattr(args, "device", None),
        dtype=getattr(args, "dtype", None),
        variant=getattr(args, "variant", None),
        extensions_directory=getattr(args, "extensions", None),
    )


def model_name(model) -> str:
    """How reports name a loaded model (a metatomic file's path, an Orb spec, ...)."""
    from ase_symdiag.backends.dispatch import as_evaluator

    return as_evaluator(model).name


def require_metatomic(model, what: str):
    """``model`` if it is a metatomic :class:`ModelHandle`; else a one-line
    :class:`~ase_symdiag.errors.ModelError` saying that ``what`` needs one (exit 2)."""
    from ase_symdiag.backends.metatomic.model import ModelHandle
    from ase_symdiag.errors import ModelError

    if not isinstance(model, ModelHandle):
        raise ModelError(f"{what} works on metatomic models only; '{model_name(model)}' is a {type(model).__name__}")
    return model


def existing_directory(text: str) -> str:
    """A directory that exists."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"directory '{text}' does not exist")
    return text


def add_model_structures(p: argparse.ArgumentParser, *, batch: bool = True, variant: bool = False) -> None:
    """MODEL STRUCTURES [--index] [--device] [--dtype] [--energy-variant] [--extensions] [--batch-size] [-q]."""
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("structures", help="any ASE-readable file (extxyz, cif, POSCAR, ...)")
    p.add_argument("--index", default=":", help="ASE index of the structures to read (default ':')")
    p.add_argument("--device", default=None, help="cpu or cuda (default: model's first available)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's")
    if variant:
        add_model_options(p)
    if batch:
        p.add_argument("--batch-size", type=positive_int, default=16, help="rotated copies per model call (default 16)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def show_progress(quiet: bool) -> bool:
    """Progress bars only on a terminal, never in logs or pipes."""
    return not quiet and sys.stderr.isatty()


def write_outputs(args: argparse.Namespace, data: Callable[[], object], data_name: str,
                  draw: Callable[[str], None], plot_name: str) -> None:
    """Write ``--json`` (``data()``) and ``--plot`` (``draw(path)``) when asked, each
    announced in one line (``<name> written to <path>``)."""
    from ase_symdiag.report import write_json

    if args.json:
        write_json(args.json, data())
        print(f"{data_name} written to {args.json}")
    if args.plot:
        draw(args.plot)
        print(f"{plot_name} written to {args.plot}")


def usage(message: str) -> UsageError:
    """A one-line usage problem found after parsing (exit 2)."""
    return UsageError(message)
