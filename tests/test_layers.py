"""The import graph of ``ase_symdiag`` follows its layers and has no cycle.

Every module is parsed with :mod:`ast`; EVERY import counts: module level, inside
functions (a lazy import is still a dependency), ``from . import x`` and other
relative ones (resolved against the module's package). ``from package import name``
is an edge to ``package.name`` when that is a module, else to ``package``. The parent
packages Python runs on the way to a module are not edges (every module would then
depend on ``ase_symdiag/__init__``). The layers, lowest first (docs/architecture.md
shows the same order; a module may import its own layer and the ones below):

0. ``errors``: the one error hierarchy, imports nothing.
1. ``o3``: operations, quadratures, irreps, transformation rules (numpy, scipy).
2. data: ``structures`` (the ASE edge in), ``backends.samples`` (the sample format
   every backend returns and every metric reads; it lives in ``backends/`` but is
   pure numpy and is the contract *between* the two layers), ``report`` (tables,
   JSON, atomic writes: the reporting edge, which metric reports use to print),
   ``torch_state``.
3. ``metrics``, ``corrections``: pure functions of samples; they never import a
   backend.
4. ``backends``: evaluate a model, return samples, nothing else.
5. ``drivers``: evaluate with a backend, then measure with the metrics.
6. products: ``calculator``, ``wrappers``, ``compare``, ``plots`` (the figures of the
   metric reports: it reads metric reports, so it sits above the metrics), ``testing``,
   ``md``, ``reference``, ``pointcloud``. ``reference`` (analytic models, the reference PET)
   and ``pointcloud`` (diagnostics of point-cloud models) are applications that
   evaluate models and measure them, so they sit with the products, not with
   backends.
7. entry points: ``cli``, ``pytest_plugin``, the package ``ase_symdiag`` itself
   (whose public names are resolved lazily from strings).

More rules: backends import no metric (they return samples and nothing else; the
layer order alone would allow it); no metric imports a model library (torch,
metatomic, metatrain, vesin, torch-sim) even lazily, and none draws a figure: no
function of the metrics layer imports matplotlib or is named ``plot*`` (plots belong
at the reporting edge, :mod:`ase_symdiag.plots`); argparse lives in ``cli/`` only; a private name (``_foo``) of the package
is not imported by another module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from repo import ROOT

PACKAGE = ROOT / "ase_symdiag"

#: the layers, lowest first: (name, module prefixes)
LAYERS: Sequence[Tuple[str, Sequence[str]]] = (
    ("errors", ("ase_symdiag.errors",)),
    ("o3", ("ase_symdiag.o3",)),
    ("data", ("ase_symdiag.structures", "ase_symdiag.backends.samples", "ase_symdiag.report",
              "ase_symdiag.torch_state")),
    ("metrics", ("ase_symdiag.metrics", "ase_symdiag.corrections")),
    ("backends", ("ase_symdiag.backends",)),
    ("drivers", ("ase_symdiag.drivers",)),
    ("products", ("ase_symdiag.calculator", "ase_symdiag.calculator_base", "ase_symdiag.wrappers", "ase_symdiag.compare", "ase_symdiag.plots",
                  "ase_symdiag.testing", "ase_symdiag.md", "ase_symdiag.reference", "ase_symdiag.pointcloud")),
    ("entry points", ("ase_symdiag.cli", "ase_symdiag.pytest_plugin", "ase_symdiag")),
)

#: model libraries a metric may not import, not even inside a function
MODEL_LIBRARIES = ("torch", "metatomic", "metatensor", "metatrain", "vesin", "torch_sim", "orb_models", "mace")


def module_name(path) -> str:
    """``ase_symdiag/a/b.py`` -> ``ase_symdiag.a.b``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> Dict[str, object]:
    """``{module name: path}`` of every module of the package."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imports_of(module: str, path, modules) -> List[Tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` of every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((target if target in modules else base, node.lineno, id(node) in top_level))
    return found


def layer_of(module: str) -> Optional[int]:
    """Index into :data:`LAYERS` of the longest matching prefix (None: not ours)."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    return best


def internal_graph() -> Dict[str, Dict[str, int]]:
    """``{module: {imported package module: first line}}``."""
    modules = package_modules()
    graph: Dict[str, Dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for target, line, _ in imports_of(module, path, modules):
            if target in modules and target != module:
                edges.setdefault(target, line)
    return graph


def find_cycle(graph: Dict[str, Dict[str, int]]) -> Optional[List[str]]:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None (depth-first search)."""
    state: Dict[str, int] = {}  # 1: on the stack, 2: done
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_violations(graph: Dict[str, Dict[str, int]]) -> List[str]:
    """``"a:line -> b (layer x -> higher layer y)"`` for every import against the order."""
    found = []
    for module, edges in sorted(graph.items()):
        own = layer_of(module)
        for target, line in sorted(edges.items()):
            other = layer_of(target)
            if own is not None and other is not None and other > own:
                found.append(f"{module}:{line} -> {target} ({LAYERS[own][0]} -> {LAYERS[other][0]})")
    return found


# --------------------------------------------------------------------------------------
# the checks of the helpers themselves (each would pass vacuously if they found nothing)


@pytest.fixture(scope="module")
def graph():
    return internal_graph()


def test_every_module_has_a_layer():
    assert [name for name in package_modules() if layer_of(name) is None] == []


def test_lazy_and_relative_imports_are_edges(tmp_path):
    """A function-level import and ``from . import``/``from ..x import`` count, resolved."""
    path = tmp_path / "planted.py"
    path.write_text(
        "from . import quadrature\n"
        "from ..structures import Structure\n"
        "def f():\n"
        "    from ase_symdiag.backends.dispatch import as_evaluator\n"
    )
    modules = package_modules()
    found = imports_of("ase_symdiag.o3.planted", path, modules)
    assert found == [
        ("ase_symdiag.o3.quadrature", 1, True),
        ("ase_symdiag.structures", 2, True),
        ("ase_symdiag.backends.dispatch", 4, False),
    ]


def test_find_cycle_finds_a_planted_cycle():
    planted = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycle(planted) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_layer_violations_finds_a_planted_upward_import():
    planted = {"ase_symdiag.metrics.x": {"ase_symdiag.backends.y": 7, "ase_symdiag.o3.z": 8}}
    assert layer_violations(planted) == ["ase_symdiag.metrics.x:7 -> ase_symdiag.backends.y (metrics -> backends)"]


def test_layer_order_is_the_documented_one():
    """docs/architecture.md lists the layers in the order of :data:`LAYERS`."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("Layers, lowest first:"))
    assert line == "Layers, lowest first: " + " < ".join(f"`{name}`" for name, _ in LAYERS) + "."


# --------------------------------------------------------------------------------------
# the rules


def test_no_import_goes_against_the_layers(graph):
    violations = layer_violations(graph)
    assert violations == [], "imports against the layers:\n" + "\n".join(violations)


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_metrics_import_no_model_library_and_plot_only_on_request():
    modules = package_modules()
    found = []
    for module, path in modules.items():
        if layer_of(module) != layer_of("ase_symdiag.metrics"):
            continue
        for target, line, top in imports_of(module, path, modules):
            root = target.split(".")[0]
            if root in MODEL_LIBRARIES or (root == "matplotlib" and top):
                found.append(f"{module}:{line} imports {target}")
    assert found == []


def functions_importing(path, library: str) -> List[Tuple[str, int]]:
    """``(function name, line)`` of every import of ``library`` (or a submodule) inside
    a function (or method, or nested function) of the module at ``path``."""
    found = []
    for function in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(name.split(".")[0] == library for name in names):
                found.append((function.name, node.lineno))
    return sorted(set(found), key=lambda item: item[1])


def test_functions_importing_finds_a_planted_lazy_matplotlib(tmp_path):
    path = tmp_path / "planted.py"
    path.write_text(
        "import numpy\n"
        "def table():\n"
        "    import numpy.linalg\n"
        "def plot(path):\n"
        "    import matplotlib\n"
        "    matplotlib.use('Agg')\n"
        "class Report:\n"
        "    def figure(self):\n"
        "        from matplotlib.colors import LogNorm\n"
    )
    assert functions_importing(path, "matplotlib") == [("plot", 5), ("figure", 9)]
    assert functions_importing(path, "scipy") == []


def test_no_metric_defines_a_plotting_function():
    """Plots are drawn at the reporting edge (:mod:`ase_symdiag.plots`), never in a
    metric module: no function there imports matplotlib (not even inside a function),
    and none is named ``plot*`` (one that draws on a given ``ax`` imports nothing)."""
    modules = package_modules()
    found = []
    for module, path in modules.items():
        if layer_of(module) != layer_of("ase_symdiag.metrics"):
            continue
        found += [f"{module}:{line} {name}() imports matplotlib" for name, line in functions_importing(path, "matplotlib")]
        found += [
            f"{module}:{node.lineno} {node.name}() draws a figure"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("plot")
        ]
    assert found == [], "plotting in the metrics layer:\n" + "\n".join(found)


def test_importing_every_metric_loads_no_model_library():
    """The static rule above, at run time: a fresh interpreter that imports every module
    of ``metrics/`` has loaded neither torch nor metatomic."""
    names = sorted(name for name in package_modules() if name.startswith("ase_symdiag.metrics"))
    code = "import sys\n" + "".join(f"import {name}\n" for name in names) + (
        "print(sorted(m for m in ('torch', 'metatomic', 'metatensor', 'vesin', 'torch_sim') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_backends_import_no_metric(graph):
    found = [
        f"{module}:{line} -> {target}"
        for module, edges in sorted(graph.items())
        if module.startswith("ase_symdiag.backends")
        for target, line in sorted(edges.items())
        if target.startswith("ase_symdiag.metrics")
    ]
    assert found == []


#: private names allowed to cross modules: none
PENDING_PRIVATE: set = set()


def private_imports() -> set:
    """``{(module, "package.module._name")}`` of every private package name imported by another module."""
    modules = package_modules()
    found = set()
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = _base(module, path.name == "__init__.py", node)
                found |= {
                    (module, f"{base}.{alias.name}")
                    for alias in node.names
                    if base.startswith("ase_symdiag") and alias.name.startswith("_") and not alias.name.startswith("__")
                }
    return found


def test_no_private_name_crosses_modules():
    assert private_imports() - PENDING_PRIVATE == set()


def test_argparse_lives_in_cli_only():
    modules = package_modules()
    found = [
        f"{module}:{line}"
        for module, path in modules.items()
        if not module.startswith("ase_symdiag.cli")
        for target, line, _ in imports_of(module, path, modules)
        if target == "argparse"
    ]
    assert found == []


def test_every_top_level_name_resolves_to_what_its_module_defines():
    """``ase_symdiag.X`` reaches each capability (measure, load, symmetrize/correct,
    export, MD, test) and is the object its module defines, not a stale path."""
    import importlib

    import ase_symdiag

    wanted = {"check_equivariance", "structure_spectrum", "symmetrized_prediction", "load_model",
              "SymmetrizedCalculator", "SymmetrizedModel", "CorrectedModel", "export_symmetrized",
              "export_corrected", "run_md", "run_md_batched", "assert_equivariant", "choose_quadrature"}
    assert wanted <= set(ase_symdiag.__all__)
    for name, module in ase_symdiag._LAZY.items():
        assert getattr(ase_symdiag, name) is getattr(importlib.import_module(module), name), name


def test_bench_and_scripts_import_names_that_exist():
    """Every ``from ase_symdiag... import X`` of bench/ and scripts/ resolves (benchmarks
    are not run by the suite, so a moved name would otherwise go unnoticed)."""
    import importlib

    missing = []
    for path in sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("scripts/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ase_symdiag"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.name}: {node.module}.{alias.name}")
    assert missing == []
