"""Bad arguments for every subcommand: exit status 2, exactly one line on stderr, no
traceback, no Python warning (issue 15).

Each case runs ``ase_symdiag.cli.app.main(argv)`` in-process. ``{model}``,
``{structures}`` etc. are filled from the fixtures below; every case must fail before
any expensive work.
"""

import os
import pickle
import warnings

import ase.io
import pytest
from ase import Atoms

from ase_symdiag.cli.app import main

#: (id, argv) of every bad invocation; the expected message fragment (or None)
CASES = [
    # check
    ("check-n-0", ["check", "{model}", "{structures}", "-n", "0"], "positive integer"),
    ("check-n-neg", ["check", "{model}", "{structures}", "-n", "-3"], "positive integer"),
    ("check-batch-0", ["check", "{model}", "{structures}", "--batch-size", "0"], "positive integer"),
    ("check-batch-neg", ["check", "{model}", "{structures}", "--batch-size", "-1"], "positive integer"),
    ("check-seed-neg", ["check", "{model}", "{structures}", "--seed", "-1"], "integer >= 0"),
    ("check-json-dir", ["check", "{model}", "{structures}", "--json", "{dir}"], "is a directory"),
    ("check-threshold-neg", ["check", "{model}", "{structures}", "--max-force-error", "-1"], "number >= 0"),
    ("check-threshold-nan", ["check", "{model}", "{structures}", "--max-energy-error", "nan"], "number >= 0"),
    ("check-index", ["check", "{model}", "{structures}", "--index", "10"], "holds 2 structure"),
    ("check-element", ["check", "{model}", "{gold}"], "does not support Au"),
    # spectrum
    ("spectrum-batch-0", ["spectrum", "{model}", "{structures}", "--batch-size", "0"], "positive integer"),
    ("spectrum-batch-neg", ["spectrum", "{model}", "{structures}", "--batch-size", "-1"], "positive integer"),
    ("spectrum-lmax-neg", ["spectrum", "{model}", "{structures}", "--lmax", "-1"], "integer >= 0"),
    ("spectrum-lmax-50", ["spectrum", "{model}", "{structures}", "--lmax", "50"], "at most"),
    ("spectrum-plot-ext", ["spectrum", "{model}", "{structures}", "--plot", "x.unknownext"], "unknown image format"),
    ("spectrum-json-dir", ["spectrum", "{model}", "{structures}", "--json", "{dir}"], "is a directory"),
    ("spectrum-index", ["spectrum", "{model}", "{structures}", "--index", "10"], "holds 2 structure"),
    ("spectrum-variant", ["spectrum", "{model}", "{structures}", "--energy-variant", "pbe"], "no energy variant 'pbe'"),
    ("spectrum-extensions", ["spectrum", "{model}", "{structures}", "--extensions", "{missing}"], "does not exist"),
    # symmetrize
    ("symmetrize-lmax-neg", ["symmetrize", "{model}", "{structures}", "--lmax", "-1"], "integer >= 0"),
    ("symmetrize-lmax-50", ["symmetrize", "{model}", "{structures}", "--lmax", "50"], "at most"),
    ("symmetrize-tol-0", ["symmetrize", "{model}", "{structures}", "--tolerance", "0"], "number > 0"),
    ("symmetrize-tol-nan", ["symmetrize", "{model}", "{structures}", "--tolerance", "nan"], "number > 0"),
    ("symmetrize-tol-neg", ["symmetrize", "{model}", "{structures}", "--relative-tolerance", "-1"], "number > 0"),
    ("symmetrize-quadrature", ["symmetrize", "{model}", "{structures}", "--quadrature", "bogus"], "bogus"),
    ("symmetrize-export-dir", ["symmetrize", "{model}", "{structures}", "--export", "{dir}"], "is a directory"),
    ("symmetrize-batch-0", ["symmetrize", "{model}", "{structures}", "--batch-size", "0"], "positive integer"),
    # representations
    ("repr-lmax-neg", ["representations", "{model}", "{structures}", "--lmax", "-1"], "integer >= 0"),
    ("repr-lmax-50", ["representations", "{model}", "{structures}", "--lmax", "50"], "at most"),
    ("repr-plot-ext", ["representations", "{model}", "{structures}", "--plot", "x.unknownext"], "unknown image format"),
    ("repr-no-features", ["representations", "{model}", "{structures}"], "no per-atom feature outputs"),
    ("repr-json-dir", ["representations", "{model}", "{structures}", "--json", "{dir}"], "is a directory"),
    # compare
    ("compare-nonsense", ["compare", "{model}", "{structures}", "--variants", "nonsense"], "nonsense"),
    ("compare-sym-xyz", ["compare", "{model}", "{structures}", "--variants", "sym:xyz"], "xyz"),
    ("compare-comma", ["compare", "{model}", "{structures}", "--variants", ","], "variant"),
    ("compare-n-0", ["compare", "{model}", "{structures}", "-n", "0"], "positive integer"),
    ("compare-seed-neg", ["compare", "{model}", "{structures}", "--seed", "-1"], "integer >= 0"),
    ("compare-plot-ext", ["compare", "{model}", "{structures}", "--plot", "x.unknownext"], "unknown image format"),
    ("compare-index", ["compare", "{model}", "{structures}", "--index", "10"], "holds 2 structure"),
    # md
    ("md-batch-0", ["md", "{model}", "{structures}", "--out", "{out}", "--batch-size", "0"], "positive integer"),
    ("md-batch-neg", ["md", "{model}", "{structures}", "--out", "{out}", "--batch-size", "-1"], "positive integer"),
    ("md-quadrature", ["md", "{model}", "{structures}", "--out", "{out}", "--quadrature", "bogus"], "bogus"),
    ("md-out-file", ["md", "{model}", "{structures}", "--out", "{file}"], "not a directory"),
    ("md-temperature", ["md", "{model}", "{structures}", "--out", "{out}", "--temperature", "-1"], "number >= 0"),
    ("md-friction", ["md", "{model}", "{structures}", "--out", "{out}", "--friction", "-1"], "number >= 0"),
    ("md-seed", ["md", "{model}", "{structures}", "--out", "{out}", "--seed", "-1"], "integer >= 0"),
    ("md-steps", ["md", "{model}", "{structures}", "--out", "{out}", "--steps", "-1"], "integer >= 0"),
    ("md-timestep", ["md", "{model}", "{structures}", "--out", "{out}", "--timestep", "0"], "number > 0"),
    ("md-timestep-nan", ["md", "{model}", "{structures}", "--out", "{out}", "--timestep", "nan"], "number > 0"),
    ("md-interval", ["md", "{model}", "{structures}", "--out", "{out}", "--interval", "0"], "positive integer"),
    ("md-max-force", ["md", "{model}", "{structures}", "--out", "{out}", "--max-force", "nan"], "number > 0"),
    ("md-index", ["md", "{model}", "{structures}", "--out", "{out}", "--index", "10"], "holds 2 structure"),
    ("md-element", ["md", "{model}", "{gold}", "--out", "{out}"], "does not support Au"),
    ("md-resume-nothing", ["md", "{model}", "{structures}", "--out", "{out}", "--resume"], "nothing to resume"),
    # pointcloud
    ("pointcloud-metatomic", ["pointcloud", "{model}"], None),
    ("pointcloud-dict", ["pointcloud", "{pickled}"], None),
    ("pointcloud-events-0", ["pointcloud", "{model}", "--events", "0"], "positive integer"),
    ("pointcloud-events-neg", ["pointcloud", "{model}", "--events", "-1"], "positive integer"),
    ("pointcloud-rotations-0", ["pointcloud", "{model}", "--rotations", "0"], "positive integer"),
    ("pointcloud-lmax-neg", ["pointcloud", "{model}", "--lmax", "-1"], "integer >= 0"),
    ("pointcloud-lmax-50", ["pointcloud", "{model}", "--lmax", "50"], "at most"),
    # reference-model
    ("refmodel-cutoff-neg", ["reference-model", "{new}", "--cutoff", "-1"], "number > 0"),
    ("refmodel-cutoff-nan", ["reference-model", "{new}", "--cutoff", "nan"], "number > 0"),
    ("refmodel-cutoff-0", ["reference-model", "{new}", "--cutoff", "0"], "number > 0"),
    ("refmodel-axis", ["reference-model", "{new}", "--axis", "0", "0", "0"], "zero vector"),
    ("refmodel-quadrupole", ["reference-model", "{new}", "--quadrupole", "inf"], "finite number"),
    ("refmodel-output-dir", ["reference-model", "{dir}"], "is a directory"),
    # train
    ("train-lr-text", ["train", "{config_lr_text}"], "learning_rate"),
    ("train-lr-neg", ["train", "{config_lr_neg}"], "learning_rate"),
    ("train-epochs-neg", ["train", "{config_epochs_neg}"], "epochs"),
    ("train-split", ["train", "{config_split}"], "sum to 1"),
    ("train-fraction-text", ["train", "{config_fraction}"], "augmentation_fraction"),
    ("train-max-structures", ["train", "{config_max_structures}"], "max_structures"),
    ("train-missing", ["train", "{missing}"], "does not exist"),
    # export
    ("export-metatomic", ["export", "{model}", "{new}"], "checkpoint"),
    ("export-dict", ["export", "{pickled}", "{new}"], "checkpoint"),
    ("export-missing", ["export", "{missing}", "{new}"], "does not exist"),
    # training-history
    ("history-text", ["training-history", "{file}"], "checkpoint"),
    ("history-metatomic", ["training-history", "{model}"], "checkpoint"),
    ("history-plot-ext", ["training-history", "{file}", "--plot", "x.unknownext"], "unknown image format"),
    ("history-json-dir", ["training-history", "{file}", "--json", "{dir}"], "is a directory"),
    ("history-run-no-structures", ["training-history", "{dir}"], "give --structures"),
    # uncertainty
    ("uncertainty-no-reference", ["uncertainty", "{model}", "{structures}"], "no reference energy or forces"),
    ("uncertainty-quadrature", ["uncertainty", "{model}", "{structures}", "--quadrature", "bogus"], "bogus"),
    ("uncertainty-prediction", ["uncertainty", "{model}", "{structures}", "--prediction", "mean"], "invalid choice"),
    ("uncertainty-plot-ext", ["uncertainty", "{model}", "{structures}", "--plot", "x.unknownext"], "unknown image format"),
    ("uncertainty-json-dir", ["uncertainty", "{model}", "{structures}", "--json", "{dir}"], "is a directory"),
]

#: a config that would train (but every case above breaks one value)
GOOD_CONFIG = {
    "data": "data.extxyz",
    "output_dir": "out",
    "training": {"epochs": 1, "learning_rate": 0.001},
}


@pytest.fixture(scope="module")
def places(tmp_path_factory, equivariant_model):
    import yaml
    from ase.build import bulk

    root = tmp_path_factory.mktemp("fuzz")
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True)
    ase.io.write(root / "structures.extxyz", [crystal, crystal.copy()])
    ase.io.write(root / "gold.extxyz", Atoms("CuAu", positions=[[0, 0, 0], [0, 0, 2.5]]))
    (root / "dir").mkdir()
    (root / "file.txt").write_text("not a checkpoint\n")
    with open(root / "dict.pt", "wb") as handle:
        pickle.dump({"model": "nothing here"}, handle)
    values = {
        "model": equivariant_model,
        "structures": str(root / "structures.extxyz"),
        "gold": str(root / "gold.extxyz"),
        "dir": str(root / "dir"),
        "file": str(root / "file.txt"),
        "pickled": str(root / "dict.pt"),
        "missing": str(root / "missing"),
        "new": str(root / "new.pt"),
    }
    configs = {
        "config_lr_text": {"training": {"epochs": 1, "learning_rate": "fast"}},
        "config_lr_neg": {"training": {"epochs": 1, "learning_rate": -1.0}},
        "config_epochs_neg": {"training": {"epochs": -2}},
        "config_split": {"split": {"train": 0.5, "validation": 0.1, "test": 0.1}},
        "config_fraction": {"training": {"augmentation_fraction": "most"}},
        "config_max_structures": {"max_structures": -5},
    }
    for name, change in configs.items():
        config = {**GOOD_CONFIG, **{k: v for k, v in change.items() if k != "training"}}
        config["training"] = {**GOOD_CONFIG["training"], **change.get("training", {})}
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        values[name] = str(path)
    return values


def _run(argv):
    try:
        return main(argv)
    except SystemExit as error:  # argparse
        return error.code


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_is_one_line(argv, fragment, places, tmp_path, capfd):
    filled = [a.format(out=str(tmp_path / "md-out"), **places) for a in argv]
    code, caught = _run_recording(filled)  # can fail: test_the_no_warning_assertion_can_fail
    out, err = capfd.readouterr()
    assert code == 2, (code, err, out)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0], err
    if fragment is not None:
        assert fragment in lines[0], lines[0]
    assert not caught
    if argv[0] == "md":  # nothing written before the failure
        assert not (tmp_path / "md-out").exists() or not any((tmp_path / "md-out").iterdir())


def test_every_subcommand_is_fuzzed():
    from ase_symdiag.cli.app import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    assert commands <= {c[1][0] for c in CASES}


# --- issue 20: outputs that collide with each other or with inputs, names too long,
# a full disk or quota: exit 2 in one line, before any work, nothing overwritten ---

#: 300 bytes: longer than any file name a file system allows (255)
LONG = "x" * 300

#: (id, argv, fragment) of output paths refused before any work
OUTPUT_CASES = [
    ("symmetrize-export-is-json", ["symmetrize", "{model}", "{structures}", "--export", "{new}", "--json", "{new}"],
     "--json '{new}' is the same file as --export '{new}'"),
    ("check-json-is-structures", ["check", "{model}", "{structures}", "--json", "{structures}"],
     "would overwrite the structures"),
    ("check-json-is-model", ["check", "{model}", "{structures}", "--json", "{model}"], "would overwrite the model"),
    ("check-json-links-to-structures", ["check", "{model}", "{structures}", "--json", "{link}"],
     "would overwrite the structures"),
    ("check-json-hard-link", ["check", "{model}", "{structures}", "--json", "{hardlink}"], "would overwrite the structures"),
    ("spectrum-json-is-plot", ["spectrum", "{model}", "{structures}", "--json", "{png}", "--plot", "{png}"],
     "is the same file as --json"),
    ("repr-json-is-compare", ["representations", "{model}", "{structures}", "--compare", "{pickled}", "--json", "{pickled}"],
     "would overwrite the --compare model"),
    ("compare-plot-is-json", ["compare", "{model}", "{structures}", "--json", "{png}", "--plot", "{png}"],
     "is the same file as --json"),
    ("md-out-is-extensions", ["md", "{model}", "{structures}", "--out", "{dir}", "--extensions", "{dir}"],
     "would overwrite the extensions folder"),
    ("pointcloud-json-is-model", ["pointcloud", "{model}", "--json", "{model}"], "would overwrite the model"),
    ("export-onto-checkpoint", ["export", "{pickled}", "{pickled}"], "would overwrite the checkpoint"),
    ("history-json-is-checkpoint", ["training-history", "{file}", "--json", "{file}"], "would overwrite the checkpoint #1"),
    ("train-export-is-data", ["train", "{config_export_data}"], "would overwrite the data"),
    ("train-export-is-config", ["train", "{config_export_config}"], "would overwrite the config"),
    # names too long (checked at parsing, before any work)
    ("check-json-long", ["check", "{model}", "{structures}", "--json", "{long}"], "file name too long"),
    ("check-json-long-ending", ["check", "{model}", "{structures}", "--json", "{long_ending}"], "ending too long"),
    ("md-out-long", ["md", "{model}", "{structures}", "--out", "{long}"], "file name too long"),
    ("export-long", ["export", "{pickled}", "{long}"], "file name too long"),
    ("refmodel-long", ["reference-model", "{long}"], "file name too long"),
    ("train-export-long", ["train", "{config_export_long}"], "file name too long"),
]


@pytest.fixture(scope="module")
def output_places(places, tmp_path_factory):
    """``places`` plus links, a plot name and train configs whose outputs collide."""
    import yaml

    root = tmp_path_factory.mktemp("outputs")
    values = dict(places, png=str(root / "same.png"), long=str(root / LONG), long_ending=str(root / f"a.{'y' * 250}"))
    os.symlink(places["structures"], root / "link.json")
    os.link(places["structures"], root / "hard.json")
    values.update(link=str(root / "link.json"), hardlink=str(root / "hard.json"))
    for name, export in (("export_data", "data.extxyz"), ("export_config", "config_export_config.yaml"),
                         ("export_long", LONG + ".pt")):
        path = root / f"config_{name}.yaml"
        path.write_text(yaml.safe_dump(dict(GOOD_CONFIG, export=export)))
        values[f"config_{name}"] = str(path)
    return values


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES])
def test_bad_output_path_is_one_line(argv, fragment, output_places, tmp_path, capfd):
    filled = [a.format(**output_places) for a in argv]
    before = {p: os.stat(p).st_mtime_ns for p in filled if os.path.isfile(p)}
    code, caught = _run_recording(filled)
    out, err = capfd.readouterr()
    assert code == 2, (code, err, out)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "error:" in lines[0], err
    assert fragment.format(**output_places) in lines[0], lines[0]
    assert not caught
    assert {p: os.stat(p).st_mtime_ns for p in before} == before  # no input overwritten
    assert not os.path.exists(output_places["new"]) and not os.path.exists(output_places["png"])


def _run_recording(argv):
    """(exit status, messages of the Python warnings raised) of ``main(argv)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _run(argv)
    return code, [str(w.message) for w in caught]


def test_the_no_warning_assertion_can_fail(monkeypatch, places):
    """The CLI ignored every warning, so 'no Python warning' could never fail: a warning
    raised on the way to a bad-argument error is now seen (and printed)."""
    from ase_symdiag.cli import check
    from ase_symdiag.errors import UsageError

    def run(args):
        warnings.warn("resolved channels exceed the variance", RuntimeWarning)
        raise UsageError("bad")

    monkeypatch.setattr(check, "run", run)
    code, caught = _run_recording(["check", places["model"], places["structures"]])
    assert code == 2 and caught == ["resolved channels exceed the variance"]


#: the command line under a 1500-byte file size limit (a quota), SIGXFSZ ignored
QUOTA = (
    "import resource, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))\n"
    "from ase_symdiag.cli.app import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_a_file_size_quota_is_one_line(places, tmp_path):
    """'File too large' was a traceback and exit 1, after all the work."""
    import subprocess
    import sys

    pytest.importorskip("resource")
    out = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-c", QUOTA, "check", places["model"], places["structures"], "-n", "2", "-q", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"ase-symdiag check: error: [Errno 27] File too large: '{out}'\n"
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.fixture
def full_disk(monkeypatch):
    """Every binary write of ase_symdiag.report goes to /dev/full (ENOSPC), as on a full
    disk or an exhausted quota."""
    import builtins

    from ase_symdiag import report

    def fake_open(file, mode="r", *args, **kwargs):
        return builtins.open("/dev/full" if mode == "wb" else file, mode, *args, **kwargs)

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    monkeypatch.setattr(report, "open", fake_open, raising=False)


def test_a_full_disk_while_saving_a_model_is_one_line(full_disk, tmp_path, capfd):
    """TorchScript's C++ writer raised 'unexpected pos' or aborted the process; the
    model is now serialised in memory and written from Python."""
    out = tmp_path / "model.pt"
    assert _run(["reference-model", str(out)]) == 2
    err = capfd.readouterr().err
    assert err == f"ase-symdiag reference-model: error: [Errno 28] No space left on device: '{out}'\n"
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_a_full_disk_while_training_is_one_line(full_disk, tmp_path, capfd):
    """train's torch.save failing was a traceback and exit 1; now one line, exit 2."""
    import yaml

    from tiny_pet import tiny_config

    from ase_symdiag.reference.data import cu_emt_dataset, write_dataset

    data = tmp_path / "cu8.extxyz"
    write_dataset(cu_emt_dataset(8, seed=5, snapshots_per_run=4), str(data))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, data, epochs=1)))
    assert _run(["train", str(config)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ase-symdiag train: error: [Errno 28] No space left on device:")
    assert "checkpoint.pt" in err


def _one_error_line(capfd):
    err = capfd.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("Warp ")]  # warp's no-GPU notice
    assert len(lines) == 1 and "Traceback" not in err and "error:" in lines[0], err
    return lines[0]


def test_md_torchsim_refuses_a_constraint_it_cannot_honour(equivariant_model, tmp_path, capfd):
    """FixCartesian (read back from extxyz) has no TorchSim counterpart: exit 2, one line
    naming it, nothing written (issue 20: the engine ignored constraints without a word)."""
    pytest.importorskip("torch_sim")
    from ase.build import bulk
    from ase.constraints import FixCartesian

    crystal = bulk("Cu", "fcc", a=3.61, cubic=True)
    crystal.set_constraint(FixCartesian([0], mask=(1, 0, 0)))
    structure = tmp_path / "constrained.extxyz"
    ase.io.write(structure, crystal)
    out = tmp_path / "md-out"
    code = _run(["md", equivariant_model, str(structure), "--engine", "torchsim", "--steps", "2", "--replicas", "1",
                 "--out", str(out), "-q"])
    assert code == 2
    assert "FixCartesian" in _one_error_line(capfd)
    assert not out.exists()


@pytest.mark.parametrize("engine", ["ase", "torchsim"])
def test_md_into_a_directory_in_use_is_one_line(equivariant_model, places, tmp_path, capfd, engine):
    """Another md run holds --out: exit 2, one line, no file of this run written
    (issue 20: both runs exited 0, one's log beside the other's state)."""
    if engine == "torchsim":
        pytest.importorskip("torch_sim")
    from ase_symdiag.md.io import LOCK_FILE, run_lock

    out = tmp_path / "md-out"
    with run_lock(str(out)):
        code = _run(["md", equivariant_model, places["structures"], "--engine", engine, "--steps", "2",
                     "--out", str(out), "-q"])
    assert code == 2
    assert "in use by another md run" in _one_error_line(capfd)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
