"""The study on metatrain's PET: with and without rotational augmentation, per-layer
symmetry content through training, the spectrum of the final breaking, test errors,
rotational spread as an uncertainty and MD stability (docs/pet_study.md §3).

For each data set (``models/data/ethanol-xtb.extxyz``, ``models/data/cu-emt.extxyz``)
and variant, a metatrain PET is trained with metatrain's own ``train_model`` (what
``mtt train`` runs), a checkpoint every few epochs, on the train/validation split of
the shipped reference models (``models/<name>-augmented.yaml``: same seed, same
held-out test structures). Variants:

- ``augmented``: metatrain's default; its PET trainer applies a random O(3)
  operation to every training structure (``metatrain/pet/trainer.py``:
  ``O3Augmenter.apply_random_augmentations`` in the training collate function).
- ``plain``: no augmentation. metatrain 2026.4.1 has no hyper-parameter for it; the
  script replaces ``metatrain.pet.trainer.O3Augmenter`` by a class whose
  ``apply_random_augmentations`` returns its inputs unchanged, for the duration of the
  ``train_model`` call (one attribute of metatrain's module, this process only).
- an equigrad-style penalty is not run: metatrain's losses compare predictions with
  targets and never see the model (docs/pet_study.md §3).

Per run, under ``--out/<data>-<variant>/``, one JSON file per stage (a stage whose file
exists is not run again, so an interrupted study resumes where it stopped):
``train.json`` (hyper-parameters, wall time, metatrain's per-epoch metrics),
``history.json`` (per-layer invariant fraction and output breaking of every
checkpoint), ``errors.json`` (test errors), ``spectrum.json``, ``layers.json``,
``llpr.json`` (rotational spread and metatrain's LLPR ``energy_uncertainty`` of the
model wrapped by ``llpr``, against the test errors), ``md.json``
(``ase-symdiag md --engine torchsim``: raw, corrected and symmetrized replicas) and, for
ethanol, ``md_hot.json`` (the same at 6000 K). ``--doc`` then measures the shipped
reference PETs' spread (``bench/rotational_uncertainty.py``), copies the stage files to
``docs/benchmarks/pet_study/`` and writes docs/pet_study.md's measured section and its
plots from them (``bench/pet_study_page.py``).

    python bench/pet_study.py --out /tmp/pet-study --jobs 2 --doc

``--smoke`` runs every stage at toy sizes in a few minutes (checks the pipeline; its
page must go to another file: ``--doc /tmp/page.md``).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = ("ethanol-xtb", "cu-emt")
VARIANTS = ("augmented", "plain")

#: metatrain PET hyper-parameters (metatrain's defaults for the rest), chosen so that one
#: training takes about 10 minutes on one thread of this project's 2-core machines
MODEL = {"d_pet": 32, "d_head": 32, "d_node": 32, "d_feedforward": 64, "num_heads": 4,
         "num_attention_layers": 2, "num_gnn_layers": 2}
SETTINGS = {
    "ethanol-xtb": {"cutoff": 5.0, "epochs": 100, "checkpoint_interval": 10, "batch_size": 8, "learning_rate": 1e-3,
                    "md": {"temperatures": "300,900,1800", "replicas": 4, "steps": 1000, "timestep": 0.5, "interval": 20},
                    # the temperature at which our own PET's plain model collapses within 0.2 ps (docs/md_stability.md)
                    "md_hot": {"temperatures": "6000", "replicas": 16, "steps": 400, "timestep": 0.5, "interval": 10}},
    "cu-emt": {"cutoff": 4.0, "epochs": 40, "checkpoint_interval": 4, "batch_size": 8, "learning_rate": 1e-3,
               "md": {"temperatures": "600,1200", "replicas": 2, "steps": 500, "timestep": 2.0, "interval": 10}},
}
SMOKE = {"d_pet": 8, "d_head": 8, "d_node": 8, "d_feedforward": 8, "num_heads": 1, "num_attention_layers": 1,
         "num_gnn_layers": 2}
#: quadrature of the symmetrized MD variant: Th, 24 operations, exact to degree 2
MD_QUADRATURE = "Th"
PROBES = 8  # test structures of the history, spectrum and layer tables


def settings(data: str, smoke: bool) -> dict:
    """Hyper-parameters and MD settings of one data set (toy sizes with ``smoke``)."""
    chosen = json.loads(json.dumps(SETTINGS[data]))
    chosen["model"] = dict(SMOKE if smoke else MODEL, cutoff=chosen.pop("cutoff"))
    chosen["precision"] = 64 if smoke else 32
    if smoke:
        chosen.update(epochs=2, checkpoint_interval=1, batch_size=4)
        for key in ("md", "md_hot"):
            if key in chosen:
                chosen[key].update(replicas=2, steps=10, interval=5)
    return chosen


def split(data: str, smoke: bool):
    """``(images, train, validation, test indices)``: the shipped reference model's split."""
    import yaml

    from ase_symdiag.reference.samples import split_indices
    from ase_symdiag.structures import read_atoms

    with open(os.path.join(ROOT, "models", f"{data}-augmented.yaml")) as handle:
        config = yaml.safe_load(handle)
    images = read_atoms(os.path.join(ROOT, "models", config["data"]))
    train, validation, test = split_indices(len(images), config["split"], config["seed"])
    if smoke:
        train, validation, test = train[:12], validation[:4], test[:4]
    return images, train, validation, test


class _NoAugmentation:
    """Stands in for metatrain's ``O3Augmenter``: every structure as it is."""

    def __init__(self, *args, **kwargs):
        pass

    def apply_random_augmentations(self, systems, targets, extra_data=None):
        return systems, targets, extra_data if extra_data is not None else {}


def stage(path: str, compute):
    """The JSON of ``path`` if a previous run wrote it, else ``compute()`` (a dict),
    written with its wall time (``wall_s``) atomically."""
    from ase_symdiag.report import write_json

    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    start = time.perf_counter()
    result = compute()
    result["wall_s"] = time.perf_counter() - start
    write_json(path, result)
    return result


def run_train_model(architecture: dict, data: str, targets: dict, validation_fraction: float, precision: int, *,
                    run: str, output: str, log: str) -> dict:
    """metatrain's ``train_model`` (what ``mtt train`` runs) of ``architecture`` on the
    ``targets`` of the ``data`` file, checkpoints in ``run`` (started afresh: metatrain
    refuses an existing one), the exported model in ``output``, its log in ``log`` and
    per-epoch metrics next to it (``.csv``); -> the options it ran with."""
    import logging

    from metatrain.cli.train import train_model
    from metatrain.utils.logging import ROOT_LOGGER, setup_logging
    from omegaconf import OmegaConf

    shutil.rmtree(run, ignore_errors=True)
    os.makedirs(run)
    for stale in (log, os.path.splitext(log)[0] + ".csv"):  # metatrain appends to both
        if os.path.exists(stale):
            os.remove(stale)
    options = {
        "seed": 0,
        "base_precision": precision,
        "device": "cpu",
        "architecture": architecture,
        "training_set": {"systems": {"read_from": data, "length_unit": "angstrom"}, "targets": targets},
        "validation_set": validation_fraction,
        "test_set": 0.0,
        "final_eval": False,
    }
    with setup_logging(ROOT_LOGGER, log_file=log, level=logging.INFO):
        train_model(OmegaConf.create(options), output=output,
                    extensions=os.path.join(os.path.dirname(output), "extensions"), checkpoint_dir=run)
    return options


def train(folder: str, images, split_idx, variant: str, chosen: dict) -> dict:
    """Train one metatrain PET in ``folder`` (a stale run folder is started afresh)."""
    import ase.io
    import metatrain.pet.trainer as pet_trainer

    train_idx, validation_idx = split_idx
    data = os.path.join(folder, "train.extxyz")
    ase.io.write(data, [images[i] for i in train_idx + validation_idx])
    targets = {"energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}}
    if images[0].pbc.all():
        targets["energy"]["stress"] = {"key": "stress"}
    architecture = {
        "name": "pet",
        "model": chosen["model"],
        "training": {
            "batch_size": chosen["batch_size"],
            "num_epochs": chosen["epochs"],
            "checkpoint_interval": chosen["checkpoint_interval"],
            "learning_rate": chosen["learning_rate"],
            "num_workers": 0,
        },
    }
    original = pet_trainer.O3Augmenter
    if variant == "plain":
        pet_trainer.O3Augmenter = _NoAugmentation
    try:
        options = run_train_model(architecture, data, targets, len(validation_idx) / (len(train_idx) + len(validation_idx)),
                                  chosen["precision"], run=os.path.join(folder, "run"),
                                  output=os.path.join(folder, "model.pt"), log=os.path.join(folder, "train.log"))
    finally:
        pet_trainer.O3Augmenter = original
    with open(os.path.join(folder, "train.csv")) as handle:  # metatrain's per-epoch metrics
        rows = [line.strip().split(",") for line in handle]
    columns = [f"{name} ({unit})" if unit else name for name, unit in zip(rows[0], rows[1])]
    epochs = [dict(zip(columns, map(float, row))) for row in rows[2:]]
    return {"options": options, "n_train": len(train_idx), "n_validation": len(validation_idx), "epochs": epochs}


def llpr(folder: str, checkpoint: str, validation_fraction: float, chosen: dict) -> str:
    """Wrap the trained PET with metatrain's LLPR (last-layer covariance and calibration
    on the training file of the run, energies and forces); -> the exported model with
    ``energy_uncertainty``."""
    run = os.path.join(folder, "llpr")
    architecture = {"name": "llpr",
                    "training": {"model_checkpoint": checkpoint, "batch_size": chosen["batch_size"], "num_workers": 0}}
    targets = {"energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}}
    run_train_model(architecture, os.path.join(folder, "train.extxyz"), targets, validation_fraction, chosen["precision"],
                    run=run, output=os.path.join(run, "llpr.pt"), log=os.path.join(run, "llpr.log"))
    return os.path.join(run, "llpr.pt")


def test_errors(model: str, test_images) -> dict:
    """RMSE of energy (meV/atom), force components (meV/Å) and stress (GPa) on ``test_images``."""
    import numpy as np
    from ase.units import GPa
    from metatomic_ase import MetatomicCalculator

    from ase_symdiag.metrics.uncertainty import reference_values

    calculator = MetatomicCalculator(model, device="cpu")
    energy, forces, stress = [], [], []
    for atoms in test_images:
        reference_energy, reference_forces = reference_values(atoms)
        reference_stress = atoms.calc.results.get("stress")
        atoms = atoms.copy()
        atoms.calc = calculator
        energy.append((atoms.get_potential_energy() - reference_energy) / len(atoms))
        forces.append((atoms.get_forces() - reference_forces).ravel())
        if reference_stress is not None and atoms.pbc.all():
            stress.append((atoms.get_stress(voigt=False).ravel() - _full(reference_stress)) / GPa)
    for atoms, e, f in zip(test_images, energy, forces):
        if not (np.isfinite(e) and np.all(np.isfinite(f))):
            raise RuntimeError(f"{model}: non-finite energy or forces on test structure {atoms.get_chemical_formula()}")
    rms = lambda values: float(np.sqrt(np.mean(np.concatenate([np.atleast_1d(v) for v in values]) ** 2)))  # noqa: E731
    return {"structures": len(test_images), "energy_rmse_meV_per_atom": 1000 * rms(energy),
            "force_rmse_meV_per_A": 1000 * rms(forces), "stress_rmse_GPa": rms(stress) if stress else None}


def _full(stress):
    """A 3x3 stress from ASE's Voigt 6-vector (or a 3x3), flattened."""
    import numpy as np
    from ase.stress import voigt_6_to_full_3x3_stress

    stress = np.asarray(stress, dtype=float)
    return (voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress.reshape(3, 3)).ravel()


def study(data: str, variant: str, out: str, smoke: bool) -> dict:
    """Every stage of one (data set, variant) run; returns their results."""
    import ase.io

    from ase_symdiag.cli.app import main as cli
    from ase_symdiag.drivers.training_history import metatrain_history
    from ase_symdiag.drivers.uncertainty import rotational_uncertainty
    from ase_symdiag.metrics.uncertainty import reference_values
    from ase_symdiag.plots import plot_calibration
    from ase_symdiag.structures import from_atoms_list

    chosen = settings(data, smoke)
    folder = os.path.join(out, f"{data}-{variant}")
    os.makedirs(folder, exist_ok=True)
    images, train_idx, validation_idx, test_idx = split(data, smoke)
    test_images = [images[i] for i in test_idx]
    test_file = os.path.join(folder, "test.extxyz")
    ase.io.write(test_file, test_images)
    structures = from_atoms_list(test_images, [f"test-{i}" for i in test_idx])
    probes = min(PROBES, len(structures))
    model, checkpoint = os.path.join(folder, "model.pt"), os.path.join(folder, "model.ckpt")

    def quiet(argv):
        code = cli(argv)
        if code != 0:
            raise RuntimeError(f"ase-symdiag {' '.join(argv)} exited {code}")
        return code

    def read(path):
        with open(path) as handle:
            return json.load(handle)

    def spectrum():
        path = os.path.join(folder, "spectrum.out.json")
        quiet(["spectrum", model, test_file, "--index", f":{probes}", "--lmax", "3", "-q", "--json", path])
        return read(path)

    def layers():
        path = os.path.join(folder, "layers.out.json")
        quiet(["representations", checkpoint, test_file, "--index", f":{probes}", "--lmax", "2", "-q",
               "--json", path, "--plot", os.path.join(folder, "layers.png")])
        return read(path)

    def uncertainty():
        wrapped = llpr(folder, checkpoint, len(validation_idx) / (len(train_idx) + len(validation_idx)), chosen)
        references = [reference_values(atoms) for atoms in test_images]
        report = rotational_uncertainty(wrapped, structures, [e for e, _ in references], [f for _, f in references],
                                        quadrature="lebedev:2")
        plot_calibration(report, os.path.join(folder, "calibration.png"))
        return report.to_dict()

    def md(key: str):
        md_settings, md_out = chosen[key], os.path.join(folder, key.replace("_", "-"))
        quiet(["md", model, test_file, "--index", "0", "--engine", "torchsim", "--variants", "raw,corrected,symmetrized",
               "--ensemble", "nvt", "--temperatures", md_settings["temperatures"],
               "--replicas", str(md_settings["replicas"]), "--steps", str(md_settings["steps"]),
               "--timestep", str(md_settings["timestep"]), "--interval", str(md_settings["interval"]),
               "--quadrature", MD_QUADRATURE, "-q", "--out", md_out]
              + (["--resume"] if os.path.exists(md_out) else []))
        return read(os.path.join(md_out, "summary.json"))

    progress = lambda path: print(f"  [{data} {variant}] measuring {os.path.basename(path)}", flush=True)  # noqa: E731
    results = {"data": data, "variant": variant, "settings": chosen}
    results["train"] = stage(os.path.join(folder, "train.json"),
                             lambda: train(folder, images, (train_idx, validation_idx), variant, chosen))
    results["history"] = stage(os.path.join(folder, "history.json"), lambda: metatrain_history(
        os.path.join(folder, "run"), structures[:probes], lmax=2, n_rotations=8, progress=progress).to_dict())
    results["errors"] = stage(os.path.join(folder, "errors.json"), lambda: test_errors(model, test_images))
    results["spectrum"] = stage(os.path.join(folder, "spectrum.json"), spectrum)
    results["layers"] = stage(os.path.join(folder, "layers.json"), layers)
    results["llpr"] = stage(os.path.join(folder, "llpr.json"), uncertainty)
    for key in ("md", "md_hot"):
        if key in chosen:
            results[key] = stage(os.path.join(folder, f"{key}.json"), lambda: md(key))
    return results


def run_all(args) -> float:
    """Every (data, variant) study, ``--jobs`` at a time as subprocesses; -> wall seconds."""
    start = time.perf_counter()
    runs = [(data, variant) for data in args.data for variant in args.variants]
    if args.jobs <= 1:
        for data, variant in runs:
            print(f"== {data} {variant}", flush=True)
            study(data, variant, args.out, args.smoke)
        return time.perf_counter() - start
    pending, active = list(runs), []
    try:
        _supervise(pending, active, args)
    finally:  # interrupted: stop the runs in flight (their finished stages stay on disk)
        for _, process in active:
            process.terminate()
            process.wait()
    return time.perf_counter() - start


def _supervise(pending: list, active: list, args) -> None:
    """Keep ``args.jobs`` runs going until ``pending`` is empty and all have exited."""
    while pending or active:
        while pending and len(active) < args.jobs:
            data, variant = pending.pop(0)
            command = [sys.executable, os.path.abspath(__file__), "--out", args.out, "--data", data,
                       "--variants", variant, "--jobs", "1", "--worker"] + (["--smoke"] if args.smoke else [])
            print(f"== {data} {variant} started", flush=True)
            active.append(((data, variant), subprocess.Popen(command)))
        time.sleep(2)
        for item in list(active):
            if item[1].poll() is not None:
                active.remove(item)
                if item[1].returncode != 0:
                    raise SystemExit(f"{item[0]} failed with exit {item[1].returncode}")


def log_invocation(out: str, wall_s: float, finished: bool) -> None:
    """Append this command, its wall time and whether it finished to
    ``out/invocations.json`` (a study resumed over several commands states their sum)."""
    from ase_symdiag.report import write_json

    path = os.path.join(out, "invocations.json")
    entries = json.load(open(path)) if os.path.exists(path) else []
    entries.append({"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": wall_s,
                    "finished": finished})
    write_json(path, entries)


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="study folder (resumes what it holds)")
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=DATA)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one thread each (default 1)")
    parser.add_argument("--doc", nargs="?", const=os.path.join(ROOT, "docs", "pet_study.md"),
                        help="copy the stage files to docs/benchmarks/pet_study/ and write the measured section of "
                             "this page (default docs/pet_study.md) and its plots (with --smoke: the copy stays in "
                             "--out and the page must be another file)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks the pipeline in minutes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one run of a --jobs study
    args = parser.parse_args()
    if args.smoke and args.doc and os.path.abspath(args.doc) == os.path.join(ROOT, "docs", "pet_study.md"):
        parser.error("--smoke writes toy numbers: give --doc another file than docs/pet_study.md")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more")
    if args.doc:  # before hours of training, not after
        from pet_study_page import BEGIN, END

        text = open(args.doc).read() if os.path.isfile(args.doc) else ""
        if BEGIN not in text or END not in text:
            parser.error(f"--doc {args.doc}: no measured section (the lines {BEGIN} and {END})")
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    start, finished = time.perf_counter(), False
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that an interrupted study is logged too
    try:
        print(f"study: {run_all(args):.0f} s", flush=True)
        if args.doc:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from rotational_uncertainty import MODELS, measure

            models = MODELS[:1] if args.smoke else MODELS
            stage(os.path.join(args.out, "shipped-uncertainty.json"),
                  lambda: {"models": {name: measure(name).to_dict() for name in models}})
        finished = True
    finally:
        if not args.worker:
            log_invocation(args.out, time.perf_counter() - start, finished)
    if args.doc:
        from pet_study_page import DATA_DIR, archive, write_page

        archive(args.out, DATA_DIR if not args.smoke else os.path.join(args.out, "page-data"))
        write_page(args.doc, DATA_DIR if not args.smoke else os.path.join(args.out, "page-data"))
        print(f"{args.doc} written", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
