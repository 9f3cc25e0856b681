"""The LAMMPS inputs in lammps_examples/ parse, reference existing files, use the
current ``pair_style metatomic`` syntax, and their models work the way LAMMPS calls
them (with ``selected_atoms``).

The keyword set follows metatensor/lammps' src/ML-METATOMIC/pair_metatomic.cpp
(PairMetatomic::settings): check_consistency, non_conservative (on/off), extensions
(path), device (name), scale (number), uncertainty_threshold (number or off), variant,
variant/energy, variant/energy_uncertainty, variant/non_conservative_forces,
variant/non_conservative_stress (name or off); ``pair_coeff * * <one atomic number
per atom type>``; units real, metal, si or electron.
"""

from repo import ROOT as REPO_ROOT
import glob
import os
import re
import shlex

import numpy as np
import pytest

ROOT = str(REPO_ROOT)
EXAMPLES = os.path.join(ROOT, "lammps_examples")
INPUTS = sorted(glob.glob(os.path.join(EXAMPLES, "in.*")))

COMMANDS = {
    "atom_modify", "atom_style", "boundary", "change_box", "clear", "comm_modify", "compute", "compute_modify",
    "create_atoms", "create_box", "dimension", "displace_atoms", "dump", "dump_modify", "echo", "fix",
    "fix_modify", "group", "include", "info", "jump", "label", "lattice", "log", "mass", "min_modify",
    "min_style", "minimize", "neigh_modify", "neighbor", "newton", "next", "package", "pair_coeff",
    "pair_modify", "pair_style", "print", "processors", "read_data", "read_dump", "read_restart", "region",
    "replicate", "reset_timestep", "restart", "run", "run_style", "shell", "suffix", "thermo",
    "thermo_modify", "thermo_style", "timer", "timestep", "uncompute", "undump", "unfix", "units",
    "variable", "velocity", "write_data", "write_dump", "write_restart",
}
ON_OFF = {"check_consistency", "non_conservative"}
VARIANTS = {"variant", "variant/energy", "variant/energy_uncertainty", "variant/non_conservative_forces",
            "variant/non_conservative_stress"}
UNITS = {"real", "metal", "si", "electron"}


def parse(path):
    """(command, args) per non-comment line, with ``variable NAME index VALUE`` substituted."""
    variables = {}
    lines = []
    with open(path) as handle:
        text = handle.read().replace("&\n", " ")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], line)
        words = shlex.split(line)
        if words[0] == "variable" and len(words) >= 4 and words[2] == "index":
            variables.setdefault(words[1], words[3])
        lines.append((number, words[0], words[1:]))
    return lines


def metatomic_settings(args):
    model, rest = args[0], args[1:]
    options = {}
    i = 0
    while i < len(rest):
        key = rest[i]
        assert i + 1 < len(rest), f"keyword {key!r} needs a value"
        value = rest[i + 1]
        if key in ON_OFF:
            assert value in ("on", "off"), f"{key} expects on/off, got {value!r}"
        elif key == "scale":
            float(value)
        elif key == "uncertainty_threshold":
            assert value == "off" or float(value) > 0, f"uncertainty_threshold: {value!r}"
        elif key == "device":
            assert value in ("cpu", "cuda", "mps") or value.startswith("cuda:"), f"device {value!r}"
        elif key == "extensions":
            pass
        elif key in VARIANTS:
            pass
        else:
            raise AssertionError(f"unknown pair_style metatomic keyword {key!r}")
        options[key] = value
        i += 2
    return model, options


def data_types(path):
    with open(path) as handle:
        for line in handle:
            match = re.match(r"\s*(\d+)\s+atom types", line)
            if match:
                return int(match.group(1))
    raise AssertionError(f"{path}: no 'atom types' line")


def test_examples_exist():
    names = {os.path.basename(p) for p in INPUTS}
    assert {"in.cu-raw", "in.cu-symmetrized", "in.water"} <= names
    assert os.path.exists(os.path.join(EXAMPLES, "README.md"))
    assert os.path.exists(os.path.join(EXAMPLES, "make_models.sh"))


@pytest.mark.parametrize("path", INPUTS, ids=os.path.basename)
def test_input_is_valid(path):
    from metatomic.torch import load_atomistic_model

    lines = parse(path)
    here = os.path.dirname(path)
    commands = [c for _, c, _ in lines]
    for number, command, args in lines:
        assert command in COMMANDS, f"{path}:{number}: unknown LAMMPS command {command!r}"
    units = [a[0] for _, c, a in lines if c == "units"]
    assert units and units[0] in UNITS
    assert commands.index("units") < commands.index("read_data") < commands.index("pair_style")
    (data,) = [a[0] for _, c, a in lines if c == "read_data"]
    assert os.path.exists(os.path.join(here, data)), f"{path}: read_data {data} does not exist"
    n_types = data_types(os.path.join(here, data))

    styles = [a for _, c, a in lines if c == "pair_style"]
    assert len(styles) == 1 and styles[0][0] == "metatomic"
    model, options = metatomic_settings(styles[0][1:])
    model_path = os.path.join(here, model)
    assert os.path.exists(model_path), f"{path}: model {model} does not exist (run make_models.sh)"
    if "extensions" in options:
        assert os.path.isdir(os.path.join(here, options["extensions"]))

    (coeff,) = [a for _, c, a in lines if c == "pair_coeff"]
    assert coeff[:2] == ["*", "*"], "pair_coeff * * <types>"
    numbers = [int(x) for x in coeff[2:]]
    assert len(numbers) == n_types, f"pair_coeff maps {len(numbers)} types, {data} has {n_types}"
    capabilities = load_atomistic_model(model_path).capabilities()
    assert set(numbers) <= set(capabilities.atomic_types)
    if units[0] == "metal":
        assert capabilities.length_unit.lower() in ("angstrom", "a")
    # the GPU run line in the header names this very input
    with open(path) as handle:
        header = handle.read()
    if "-sf kk" in header:
        assert f"-in {os.path.basename(path)}" in header


def _selected_energy(model_path, atoms, selected):
    """Total energy from the model called as LAMMPS calls it: selected_atoms set."""
    import torch
    import vesin.metatomic
    from metatensor.torch import Labels
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, System, load_atomistic_model

    model = load_atomistic_model(model_path)
    system = System(
        torch.tensor(atoms.numbers, dtype=torch.int32),
        torch.tensor(atoms.positions, dtype=torch.float64),
        torch.tensor(np.asarray(atoms.cell), dtype=torch.float64),
        torch.tensor(atoms.pbc),
    )
    for options in model.requested_neighbor_lists():
        block = vesin.metatomic.NeighborList(options, length_unit="angstrom").compute(system, copy=True)
        system.add_neighbor_list(options, block)
    evaluation = ModelEvaluationOptions(
        length_unit="angstrom",
        outputs={"energy": ModelOutput(unit="eV", sample_kind="system")},
        selected_atoms=Labels(["system", "atom"], torch.tensor([[0, i] for i in selected], dtype=torch.int32)),
    )
    result = model([system], evaluation, check_consistency=True)
    return float(result["energy"].block().values.sum())


@pytest.mark.parametrize("model, symmetrize", [
    ("morse-broken-l2-lammps.pt", None),
    ("morse-broken-l2-symmetrized.pt", "O"),
])
def test_shipped_models_accept_selected_atoms(model, symmetrize):
    """pair_style metatomic always passes selected_atoms (the atoms a rank owns): the
    energy of half the atoms equals the sum of SymDiagCalculator's per-atom energies of
    the original model (rotationally averaged over O_h for the symmetrized export)."""
    import ase.io

    from ase_symdiag import SymDiagCalculator

    atoms = ase.io.read(os.path.join(ROOT, "docs", "examples", "structures.extxyz"), 0)
    calc = SymDiagCalculator(os.path.join(ROOT, "models", "morse-broken-l2.pt"), symmetrize=symmetrize)
    atoms.calc = calc
    energies = atoms.get_potential_energies()
    half = list(range(0, len(atoms), 2))
    got = _selected_energy(os.path.join(EXAMPLES, model), atoms, half)
    assert got == pytest.approx(energies[half].sum(), abs=1e-9)
    assert _selected_energy(os.path.join(EXAMPLES, model), atoms, range(len(atoms))) == pytest.approx(
        atoms.get_potential_energy(), abs=1e-9)
