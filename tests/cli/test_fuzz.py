"""Bad arguments for every subcommand: exit status 2, exactly one line on stderr, no
traceback, no Python warning (issue 15).

Each case runs ``ase_symdiag.cli.app.main(argv)`` in-process. ``{model}``,
``{structures}`` etc. are filled from the fixtures below; every case must fail before
any expensive work.
"""

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
    ("spectrum-variant", ["spectrum", "{model}", "{structures}", "--variant", "pbe"], "no energy variant 'pbe'"),
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _run(filled)
    out, err = capfd.readouterr()
    assert code == 2, (code, err, out)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0], err
    if fragment is not None:
        assert fragment in lines[0], lines[0]
    assert not [str(w.message) for w in caught]
    if argv[0] == "md":  # nothing written before the failure
        assert not (tmp_path / "md-out").exists() or not any((tmp_path / "md-out").iterdir())


def test_every_subcommand_is_fuzzed():
    from ase_symdiag.cli.app import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    assert commands <= {c[1][0] for c in CASES}
