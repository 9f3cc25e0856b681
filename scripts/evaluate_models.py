"""Evaluate the shipped reference PET models and write their model cards.

For each ``models/<name>.yaml`` whose training finished (``checkpoints/<name>/metrics.json``
and ``<name>.pt`` exist), this script

- rebuilds the seeded test split of the training data,
- runs ``ase_symdiag.check_equivariance(<name>.pt, test_structures, n_rotations=8)``
  (seed 0, 4 proper + 4 improper operations, the model's own dtype),
- checks that the model loads in ``metatomic_ase.MetatomicCalculator`` and
  ``ase_symdiag.SymDiagCalculator`` and that both agree on a test structure,
- writes ``models/<name>.equivariance.json`` and the model card ``models/<name>.md``.

A card compares its model with a partner: ``<base>-augmented`` and ``<base>-plain``
pair up automatically when both are evaluated in the same run; ``--partner NAME``
names the partner of a single model (its ``NAME.equivariance.json`` is read if NAME
is not evaluated in this run). A model is never its own partner: a name that is
neither ``-augmented`` nor ``-plain`` (e.g. ``ethanol-xtb-equigrad``) gets no
automatic partner, and ``--partner`` equal to the model's name is refused. The
equigrad card also has hand-written sections (``docs/minimal_bias.md`` shows how it
is made): re-running this script on it replaces them.

Usage (from anywhere; paths are relative to the repository)::

    python scripts/evaluate_models.py cu-emt-augmented cu-emt-plain ...
    python scripts/evaluate_models.py ethanol-xtb-equigrad --partner ethanol-xtb-plain
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from ase_symdiag.errors import SymDiagError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the models, their configs, cards and equivariance reports
MODELS = os.path.join(ROOT, "models")


def _stats(values) -> Dict[str, float]:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    return {"mean": float(values.mean()), "median": float(np.median(values)), "max": float(values.max())}


def evaluate(name: str, max_structures: int = 40) -> dict:
    """Equivariance check, rotated test errors and calculator agreement of
    ``models/<name>.pt`` on (the first ``max_structures`` of) its test split; writes
    ``models/<name>.equivariance.json`` and returns it with the config and metrics."""
    from metatomic_ase import MetatomicCalculator

    from ase_symdiag import SymDiagCalculator, check_equivariance
    from ase_symdiag.report import write_json
    from ase_symdiag.reference.data import read_dataset
    from ase_symdiag.reference.config import load_config, resolve_path, validate_config
    from ase_symdiag.reference.samples import split_indices

    config = validate_config(load_config(os.path.join(MODELS, f"{name}.yaml")))
    metrics_path = os.path.join(resolve_path(config, config["output_dir"]), "metrics.json")
    model_path = os.path.join(MODELS, f"{name}.pt")
    with open(metrics_path) as f:
        metrics = json.load(f)
    images = read_dataset(resolve_path(config, config["data"]))
    _, _, test_idx = split_indices(len(images), config["split"], int(config["seed"]))
    test = [images[i] for i in test_idx][:max_structures]

    start = time.perf_counter()
    report = check_equivariance(model_path, test, n_rotations=8, seed=0)
    check_time = time.perf_counter() - start
    s = report.structures
    equivariance = {
        "n_structures": len(s),
        "n_operations": report.n_operations,
        "dtype": report.dtype,
        "force_relative": _stats([r.forces.relative for r in s]),
        "force_rms_eV_per_A": _stats([r.forces.rms for r in s]),
        "energy_meV_per_atom": _stats([r.energy_max_per_atom for r in s]),
        "check_time_s": check_time,
    }
    if any(r.stress for r in s):
        equivariance["stress_GPa"] = _stats([r.stress.max_gpa if r.stress else None for r in s])
    if any(r.direct_forces for r in s):
        equivariance["direct_force_relative"] = _stats([r.direct_forces.relative for r in s])

    # test errors on rotated copies (one Haar-random O(3) operation per structure)
    from ase_symdiag.o3.operations import haar_rotations

    rotations = haar_rotations(len(test), seed=1)
    calc = SymDiagCalculator(model_path)
    errors = {"energy": [], "forces": [], "stress": []}
    for atoms, rotation in zip(test, rotations):
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ rotation.T
        rotated.cell = atoms.cell.array @ rotation.T
        rotated.calc = calc
        errors["energy"].append((rotated.get_potential_energy() - atoms.info["energy"]) / len(atoms))
        errors["forces"].append((rotated.get_forces() - atoms.arrays["forces"] @ rotation.T).ravel())
        if "stress" in atoms.info:
            reference = rotation @ atoms.info["stress"] @ rotation.T
            errors["stress"].append((rotated.get_stress(voigt=False) - reference).ravel())
    from ase.units import GPa

    def mae_rmse(values, scale):
        v = np.concatenate([np.atleast_1d(x) for x in values]) * scale
        return {"mae": float(np.abs(v).mean()), "rmse": float(np.sqrt((v**2).mean()))}

    rotated_test = {
        "energy_meV_per_atom": mae_rmse(errors["energy"], 1000.0),
        "forces_meV_per_A": mae_rmse(errors["forces"], 1000.0),
    }
    if errors["stress"]:
        rotated_test["stress_GPa"] = mae_rmse(errors["stress"], 1.0 / GPa)

    atoms = test[0].copy()
    results = []
    for calc in (MetatomicCalculator(model_path), SymDiagCalculator(model_path)):
        a = atoms.copy()
        a.calc = calc
        results.append((a.get_potential_energy(), a.get_forces()))
    agreement = {
        "energy_abs_diff_eV": abs(results[0][0] - results[1][0]),
        "forces_max_abs_diff_eV_per_A": float(np.abs(results[0][1] - results[1][1]).max()),
    }
    out = {
        "name": name,
        "equivariance": equivariance,
        "rotated_test": rotated_test,
        "calculator_agreement": agreement,
    }
    write_json(os.path.join(MODELS, f"{name}.equivariance.json"), out)
    return {"config": config, "metrics": metrics, **out}


def _fmt(entry: Optional[dict]) -> str:
    return "n/a" if not entry else f"{entry['mae']:.2f} / {entry['rmse']:.2f}"


def card(result: dict, partner: Optional[dict] = None) -> str:
    """The Markdown model card of ``result`` (from :func:`evaluate`), with a column for
    ``partner`` (a result or an equivariance report of another model) if given."""
    if partner is not None and partner["name"] == result["name"]:
        raise SymDiagError(f"{result['name']}: a model cannot be its own partner")
    config, metrics, eq = result["config"], result["metrics"], result["equivariance"]
    test = metrics["test"]
    hypers = metrics["hypers"]
    training = config["training"]
    name = result["name"]
    lines = [
        f"# {name}",
        "",
        f"Unconstrained PET-style point-edge transformer (`ase_symdiag.reference.pet.PET`), "
        f"{'trained WITH' if metrics['augmentation_fraction'] > 0 else 'trained WITHOUT'} random O(3) "
        f"augmentation (`augmentation_fraction: {metrics['augmentation_fraction']}`). "
        "Reference model for the symmetry diagnostics of ase-symdiag: it is NOT "
        "rotationally equivariant by construction.",
        "",
        f"- file: `models/{name}.pt` (metatomic AtomisticModel, dtype **{metrics['dtype']}**, "
        f"{metrics['n_parameters']} parameters)",
        "- outputs: `energy` (per-atom capable), "
        + ("`non_conservative_force`, " if hypers["direct_forces"] else "")
        + ", ".join(f"`mtt::features::layer{k}`" for k in range(hypers["n_layers"])),
        f"- config: `models/{name}.yaml`; reproduce with "
        f"`ase-symdiag train models/{name}.yaml` "
        "(checkpoint and metrics.json in "
        f"`models/{config['output_dir']}`)",
        f"- test-error and equivariance tables: `python scripts/evaluate_models.py {name}"
        + (f" --partner {partner['name']}`" if partner else "`"),
        "",
        "## Data",
        "",
        f"- `{os.path.relpath(os.path.join(MODELS, metrics['data']), ROOT)}`: "
        f"{sum(metrics['n_structures'].values())} structures, split "
        f"{metrics['n_structures']['train']}/{metrics['n_structures']['validation']}/"
        f"{metrics['n_structures']['test']} (train/validation/test, seed {config['seed']})",
        f"- force RMS of the data: **{metrics['data_force_rms_eV_per_A'] * 1000:.0f} meV/Å**; "
        f"per-atom energy std {metrics['data_energy_std_meV_per_atom']:.1f} meV/atom"
        + (
            f"; stress RMS {metrics['data_stress_rms_GPa']:.2f} GPa"
            if metrics.get("data_stress_rms_GPa")
            else ""
        ),
        "",
        "## Hyper-parameters",
        "",
        "- model: " + ", ".join(f"{k}={v}" for k, v in hypers.items()),
        f"- training: {metrics['epochs_completed']}/{metrics['epochs_planned']} epochs, batch "
        f"{training['batch_size']}, Adam lr {training['learning_rate']} with "
        f"{training['scheduler']} schedule, loss weights {training['weights']}, energy "
        f"warm-up {training['energy_warmup_epochs']} epochs, 1 CPU thread",
        f"- training time: **{metrics['training_time_s'] / 60:.1f} min** (CPU, shared 2-core machine)",
        "",
        "## Test errors (MAE / RMSE, unrotated test structures)",
        "",
        "| quantity | MAE / RMSE | data scale |",
        "|---|---|---|",
        f"| energy (meV/atom) | {_fmt(test['energy_meV_per_atom'])} | std {metrics['data_energy_std_meV_per_atom']:.1f} |",
        f"| forces, conservative (meV/Å) | {_fmt(test['forces_meV_per_A'])} | RMS {metrics['data_force_rms_eV_per_A'] * 1000:.0f} |",
    ]
    if test.get("direct_forces_meV_per_A"):
        lines.append(
            f"| forces, direct head (meV/Å) | {_fmt(test['direct_forces_meV_per_A'])} | RMS {metrics['data_force_rms_eV_per_A'] * 1000:.0f} |"
        )
    if test.get("stress_GPa"):
        lines.append(
            f"| stress (GPa) | {_fmt(test['stress_GPa'])} | RMS {metrics['data_stress_rms_GPa']:.2f} |"
        )
    rot = result["rotated_test"]
    lines += [
        "",
        f"Same test structures, each rotated by one Haar-random O(3) operation (seed 1; "
        f"MAE / RMSE, labels rotated accordingly): energy {_fmt(rot['energy_meV_per_atom'])} "
        f"meV/atom, forces {_fmt(rot['forces_meV_per_A'])} meV/Å"
        + (f", stress {_fmt(rot['stress_GPa'])} GPa" if "stress_GPa" in rot else "")
        + ".",
    ]
    lines += [
        "",
        "## Rotational equivariance",
        "",
        f"`ase_symdiag.check_equivariance(\"models/{name}.pt\", test_structures, n_rotations=8)` "
        f"(seed 0, 4 proper + 4 improper operations, {eq['dtype']}) over the first "
        f"{eq['n_structures']} test structures; mean / median / max over structures:",
        "",
        "| metric | this model |" + (f" {partner['name']} |" if partner else ""),
        "|---|---|" + ("---|" if partner else ""),
    ]

    def row(label, key, fmt):
        a = eq.get(key)
        text = "n/a" if a is None else " / ".join(fmt(a[k]) for k in ("mean", "median", "max"))
        line = f"| {label} | {text} |"
        if partner:
            b = partner["equivariance"].get(key)
            line += (" n/a |" if b is None else " " + " / ".join(fmt(b[k]) for k in ("mean", "median", "max")) + " |")
        return line

    lines.append(row("force error / force RMS (conservative)", "force_relative", lambda v: f"{v:.3g}"))
    lines.append(row("force error RMS (meV/Å)", "force_rms_eV_per_A", lambda v: f"{v * 1000:.1f}"))
    lines.append(row("max energy change (meV/atom)", "energy_meV_per_atom", lambda v: f"{v:.3g}"))
    if "stress_GPa" in eq:
        lines.append(row("max stress error (GPa)", "stress_GPa", lambda v: f"{v:.3g}"))
    if "direct_force_relative" in eq:
        lines.append(row("direct force error / force RMS", "direct_force_relative", lambda v: f"{v:.3g}"))
    agreement = result["calculator_agreement"]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "from metatomic_ase import MetatomicCalculator",
        "from ase_symdiag import SymDiagCalculator",
        f"calc = MetatomicCalculator(\"models/{name}.pt\")  # or SymDiagCalculator(...)",
        "```",
        "",
        f"Both calculators load the file and agree on a test structure to "
        f"{agreement['energy_abs_diff_eV']:.1e} eV (energy) and "
        f"{agreement['forces_max_abs_diff_eV_per_A']:.1e} eV/Å (forces), float32 round-off.",
        "",
    ]
    return "\n".join(lines)


def automatic_partner(name: str) -> Optional[str]:
    """``<base>-plain`` for ``<base>-augmented`` and vice versa; None for any other name."""
    if name.endswith("-augmented"):
        return name[: -len("-augmented")] + "-plain"
    if name.endswith("-plain"):
        return name[: -len("-plain")] + "-augmented"
    return None


def _partner(name: str, partner_name: str, results: Dict[str, dict]) -> dict:
    """The partner of ``name``: evaluated in this run, or read from its equivariance report."""
    if partner_name == name:
        raise SymDiagError(f"{name}: a model cannot be its own partner")
    if partner_name in results:
        return results[partner_name]
    path = os.path.join(MODELS, f"{partner_name}.equivariance.json")
    if not os.path.exists(path):
        raise SymDiagError(f"partner '{partner_name}': {path} does not exist (evaluate it first)")
    with open(path) as f:
        return json.load(f)


def main(argv: Optional[List[str]] = None) -> int:
    from ase_symdiag.report import atomic_write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="model names: models/<name>.yaml, models/<name>.pt")
    parser.add_argument("--partner", default=None, help="the partner model of a single NAME in its card")
    args = parser.parse_args(argv)
    if args.partner is not None and len(args.names) != 1:
        parser.error("--partner needs exactly one model name")
    if args.partner is not None and args.partner == args.names[0]:
        parser.error(f"{args.partner}: a model cannot be its own partner")
    torch.set_num_threads(1)
    try:
        results = {name: evaluate(name) for name in args.names}
        for name, result in results.items():
            if args.partner is not None:
                partner = _partner(name, args.partner, results)
            else:  # pair plain and augmented models evaluated together
                partner = results.get(automatic_partner(name) or "")
            text = card(result, partner)
            atomic_write(os.path.join(MODELS, f"{name}.md"), lambda tmp: _write_text(tmp, text))
            eq = result["equivariance"]
            print(
                f"{name}: force rel err mean {eq['force_relative']['mean']:.3g} "
                f"max {eq['force_relative']['max']:.3g}; energy max {eq['energy_meV_per_atom']['max']:.3g} meV/atom"
            )
    except SymDiagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
