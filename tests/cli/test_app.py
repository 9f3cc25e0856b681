"""cli/app.py: warnings that concern the result are shown (one line each), only the named
harmless ones are silenced; OS errors are one line, exit 2 (issue 20)."""

import errno
import sys
import warnings

import pytest

from ase_symdiag.cli import check
from ase_symdiag.cli.app import HARMLESS_WARNINGS, main

#: what metrics/spectrum.py says when a quadrature aliases
ALIASING = "forces: resolved channels exceed the variance by 1e-06: the quadrature 'Th' (degree 2) is not exact"


def _warning_run(message, category, module="ase_symdiag.metrics.spectrum"):
    def run(args):
        warnings.warn_explicit(message, category, "somewhere.py", 1, module=module)
        return 0

    return run


@pytest.fixture
def shown():
    """Python's default warning filters and display on stderr (pytest turns warnings
    into errors and records them)."""

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def test_a_warning_about_the_result_is_shown_in_one_line(monkeypatch, capsys, shown):
    """Every warning was ignored, the aliasing RuntimeWarning of the spectrum included."""
    monkeypatch.setattr(check, "run", _warning_run(ALIASING, RuntimeWarning))
    assert main(["check", "model.pt", "structures.extxyz"]) == 0
    err = capsys.readouterr().err
    assert err == f"ase-symdiag check: warning: {ALIASING} (RuntimeWarning)\n"


@pytest.mark.parametrize(
    "message, module",
    [
        ("`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.", "torch.jit._script"),
        ("`torch.jit.save` is deprecated. Please switch to `torch.export`.", "torch.jit._serialization"),
        ("TorchScript support is deprecated", "metatomic.torch"),
        ("Setting the shape on a NumPy array has been deprecated in NumPy 2.5.", "ase.atoms"),
    ],
)
def test_named_harmless_warnings_are_silenced(monkeypatch, capsys, message, module):
    monkeypatch.setattr(check, "run", _warning_run(message, DeprecationWarning, module))
    _assert_silent(capsys)


@pytest.mark.parametrize(
    "message",
    [
        "'torch.load' received a zip file that looks like a TorchScript archive dispatching to 'torch.jit.load'",
        "Detected pickle protocol 4 in the checkpoint, which was not the default pickle protocol",
    ],
)
def test_torch_load_remarks_on_a_rejected_file_are_silenced(monkeypatch, capsys, message):
    monkeypatch.setattr(check, "run", _warning_run(message, UserWarning, "ase_symdiag.reference.checkpoints"))
    _assert_silent(capsys)


def _assert_silent(capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["check", "model.pt", "structures.extxyz"]) == 0
    assert not caught and capsys.readouterr().err == ""


def test_every_silenced_warning_has_a_reason():
    assert HARMLESS_WARNINGS and all(len(reason) > 20 for *_, reason in HARMLESS_WARNINGS)


def test_the_same_numpy_warning_from_elsewhere_is_shown(monkeypatch, shown, capsys):
    """Silenced only where it is known harmless (ase), not everywhere."""
    message = "Setting the shape on a NumPy array has been deprecated in NumPy 2.5."
    monkeypatch.setattr(check, "run", _warning_run(message, DeprecationWarning, "ase_symdiag.metrics.spectrum"))
    warnings.simplefilter("always")
    assert main(["check", "model.pt", "structures.extxyz"]) == 0
    assert "warning: Setting the shape" in capsys.readouterr().err


@pytest.mark.parametrize(
    "code, text", [(errno.EFBIG, "File too large"), (errno.ENOSPC, "No space left on device"), (errno.ENAMETOOLONG, "File name too long")]
)
def test_os_errors_are_one_line_exit_2(monkeypatch, capsys, code, text):
    def run(args):
        raise OSError(code, text, "/somewhere/report.json")

    monkeypatch.setattr(check, "run", run)
    assert main(["check", "model.pt", "structures.extxyz"]) == 2
    err = capsys.readouterr().err
    assert err == f"ase-symdiag check: error: [Errno {code}] {text}: '/somewhere/report.json'\n"
