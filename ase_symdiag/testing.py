"""Equivariance assertions for model developers' own test suites.

::

    from ase_symdiag.testing import assert_equivariant

    def test_my_model_is_equivariant(symdiag_structures):
        assert_equivariant(MyCalculator(), list(symdiag_structures.values()))

:func:`assert_equivariant` measures the output equivariance errors of docs/methods.md
§1 (the same definitions as :func:`ase_symdiag.check_equivariance`, through
:func:`ase_symdiag.metrics.equivariance.structure_errors`) and raises an ``AssertionError``
with a small table when one exceeds its tolerance. It accepts any ASE calculator
(evaluated one rotated copy at a time, as is a :class:`~ase_symdiag.SymDiagCalculator`
that averages, corrects or uses direct heads: what it returns is what is tested),
a plain :class:`~ase_symdiag.SymDiagCalculator`, a metatomic model file, an
``AtomisticModel`` or a :class:`~ase_symdiag.ModelHandle` (evaluated batched by
``check_equivariance``).

Default tolerances are the floating-point noise floors derived in
:data:`TOLERANCES` (see :func:`noise_floor`).
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from ase_symdiag.backends.metatomic.model import ModelHandle
from ase_symdiag.errors import UsageError
from ase_symdiag.drivers.equivariance import calculator_equivariance, check_equivariance, equivariance_with_predictions
from ase_symdiag.metrics.equivariance import EquivarianceReport, check_operations
from ase_symdiag.o3.irreps import invariant_counts
from ase_symdiag.o3.operations import validate_rotations
from ase_symdiag.report import format_table
from ase_symdiag.structures import from_atoms

# --------------------------------------------------------------------------------------
# default tolerances: derived floating-point noise floors
# --------------------------------------------------------------------------------------

#: unit roundoff of each dtype: 2^-24 (float32) and 2^-53 (float64)
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}

#: Assumptions behind the noise floors (orders of magnitude for an interatomic potential).
NOISE_ASSUMPTIONS = {
    # every output entry accumulates about this many rounded terms (neighbours inside a
    # 5-6 Å cutoff in a dense solid, ~50-80, times a few layers of sums)
    "n_terms": 100,
    # magnitude of one term of a per-atom energy (eV); per-atom energies of a few eV
    # come out of cancelling repulsive and attractive terms of this size
    "energy_term": 10.0,
    # magnitude of one term of a force (eV/Å), same cancellation
    "force_term": 10.0,
    # a force scale (eV/Å) and a force constant (eV/Å^2): how much a rounded position
    # changes an energy and a force
    "force": 10.0,
    "stiffness": 10.0,
    # largest |coordinate| (Å): rotated positions are rounded to u * length in the dtype
    "length": 20.0,
    # a bond length (Å) and the volume per atom (Å^3), for the virial stress
    "bond": 3.0,
    "volume_per_atom": 10.0,
    # a comparison is the difference of two noisy evaluations (sqrt 2) and the maximum
    # over operations and atoms of ~Gaussian rounding noise (~4 sigma): 4 sqrt 2 ~ 6,
    # rounded up to 10
    "safety": 10.0,
}


def noise_floor(dtype: str, assumptions: Optional[dict] = None) -> Dict[str, float]:
    """Equivariance errors an exactly equivariant model shows from rounding alone.

    With ``u`` the unit roundoff (2^-24 ~ 6.0e-8 in float32, 2^-53 ~ 1.1e-16 in
    float64), ``n`` the number of accumulated terms (rounding errors of ``n`` terms of
    size ``t`` add up like a random walk, ``u t sqrt(n)``) and the position rounding
    ``u L`` of the rotated coordinates (which propagates through a force, resp. a force
    constant), and a safety factor ``s`` (difference of two evaluations, maximum over
    operations and atoms):

    - energy (eV/atom):  s u (e_term sqrt(n) + F L)           = 3000 u
    - force  (eV/Å, RMS over atoms, max over operations):
                         s u (f_term sqrt(n) + k L)           = 3000 u
    - stress (eV/Å^3, Frobenius):
                         s u (b f_term sqrt(n) + b k L) / v   = 900 u

    with the values of :data:`NOISE_ASSUMPTIONS` (n = 100, e_term = 10 eV,
    f_term = F = 10 eV/Å, k = 10 eV/Å^2, L = 20 Å, b = 3 Å, v = 10 Å^3, s = 10).
    In float32 that is 1.8e-4 eV/atom, 1.8e-4 eV/Å and 5.4e-5 eV/Å^3 (8.6 MPa);
    in float64 3.3e-13 eV/atom, 3.3e-13 eV/Å and 1.0e-13 eV/Å^3.
    ``relative_force`` (for ``relative=True``) is the force floor for an RMS force of
    1 eV/Å. These are per-structure bounds: errors of the total energy of N atoms grow
    like sqrt(N) and are divided by N, so they only loosen for large structures.
    """
    if dtype not in UNIT_ROUNDOFF:
        raise UsageError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    a = dict(NOISE_ASSUMPTIONS)
    a.update(assumptions or {})
    u = UNIT_ROUNDOFF[dtype]
    root_n = math.sqrt(a["n_terms"])
    energy = a["safety"] * u * (a["energy_term"] * root_n + a["force"] * a["length"])
    force = a["safety"] * u * (a["force_term"] * root_n + a["stiffness"] * a["length"])
    stress = (
        a["safety"]
        * u
        * (a["bond"] * a["force_term"] * root_n + a["bond"] * a["stiffness"] * a["length"])
        / a["volume_per_atom"]
    )
    return {
        "energy": float(energy),  # eV/atom
        "force": float(force),  # eV/Å
        "relative_force": float(force / 1.0),  # dimensionless, for an RMS force of 1 eV/Å
        "stress": float(stress),  # eV/Å^3
    }


#: default tolerances per dtype: ``{"float64": {"energy", "force", "relative_force", "stress"}, "float32": {...}}``
TOLERANCES: Dict[str, Dict[str, float]] = {name: noise_floor(name) for name in UNIT_ROUNDOFF}


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


def _labelled_atoms(atoms) -> List[tuple]:
    """``[(label, Atoms)]`` from one Atoms, a list of them, or a ``{name: Atoms}`` dict."""
    from ase import Atoms

    if isinstance(atoms, Atoms):
        items = [atoms]
    elif isinstance(atoms, dict):
        return [(str(name), a) for name, a in atoms.items()]
    else:
        items = list(atoms)
    if not items:
        raise UsageError("no structures given")
    return [
        (f"{i}:{a.info.get('name') or a.get_chemical_formula()}", a) for i, a in enumerate(items)
    ]


def _handle_of(model, dtype):
    from ase_symdiag.calculator import SymDiagCalculator

    if isinstance(model, SymDiagCalculator):
        return model.handle
    if isinstance(model, ModelHandle):
        return model
    return ModelHandle.load(model, dtype=dtype)


def _is_model(model) -> bool:
    """True for what the batched check evaluates exactly as given: a model (path,
    module, handle) or a *plain* SymDiagCalculator. A SymDiagCalculator that averages,
    corrects or returns direct forces is a calculator: its own outputs are tested."""
    import torch

    from ase_symdiag.calculator import SymDiagCalculator

    if isinstance(model, SymDiagCalculator):
        return model.plain
    if _is_torchsim(model):
        return False
    return isinstance(model, (ModelHandle, str, pathlib.PurePath, torch.nn.Module))


def _is_torchsim(model) -> bool:
    """A TorchSim ``ModelInterface`` (a torch module, but not a metatomic model)."""
    import torch

    if not isinstance(model, torch.nn.Module) or hasattr(model, "capabilities"):
        return False
    from ase_symdiag.backends.torchsim import is_torchsim_model

    return is_torchsim_model(model)


# --------------------------------------------------------------------------------------
# the assertion
# --------------------------------------------------------------------------------------


@dataclass
class _Check:
    quantity: str  # "energy", "forces", "stress", "direct forces", "direct stress"
    structure: int
    operation: int
    measured: float
    tolerance: float

    @property
    def ratio(self) -> float:
        if self.measured == 0.0:
            return 0.0
        return self.measured / self.tolerance if self.tolerance > 0 else math.inf

    @property
    def failed(self) -> bool:
        return not self.measured <= self.tolerance  # NaN fails


def _checks(report: EquivarianceReport, tol: Dict[str, float], relative: bool) -> List[_Check]:
    __tracebackhide__ = True
    checks = []
    for i, r in enumerate(report.structures):
        energies = np.abs(np.asarray(r.per_operation_energy)) / r.n_atoms
        checks.append(_Check("energy", i, int(np.argmax(energies)), float(energies.max()), tol["energy"]))
        for name, vector in (("forces", r.forces), ("direct forces", r.direct_forces)):
            if vector is None:
                continue
            per_op = np.asarray(vector.per_operation_rms_per_component)
            if relative:  # over max(RMS force component, RELATIVE_FORCE_FLOOR), as the report
                per_op = per_op / vector.relative_denominator
            k = int(np.argmax(per_op))
            checks.append(_Check(name, i, k, float(per_op[k]), tol["force"]))
        for name, tensor in (("stress", r.stress), ("direct stress", r.direct_stress)):
            if tensor is None:
                continue
            per_op = np.asarray(tensor.per_operation)
            k = int(np.argmax(per_op))
            checks.append(_Check(name, i, k, float(per_op[k]), tol["stress"]))
    return checks


def _worst_atom(forces: Optional[np.ndarray], rotation: np.ndarray):
    """(index, |dF_i|) for forces ``(2, N, 3)`` at the identity and at ``rotation``."""
    if forces is None:
        return None, None
    diff = forces[1] - forces[0] @ rotation.T
    norms = np.linalg.norm(diff, axis=1)
    i = int(np.argmax(norms))
    return i, float(norms[i])


def _failure_message(report, checks, tol, relative, worst_atom) -> str:
    __tracebackhide__ = True
    failed = [c for c in checks if c.failed]
    worst = max(failed, key=lambda c: c.ratio)
    r = report.structures[worst.structure]
    rotation = report.operations[worst.operation]
    det = float(np.linalg.det(rotation))
    force_unit = "/max(F,floor)" if relative else "eV/A"
    headers = ["structure", "atoms", "|dE|/N eV/at", f"dF rms/comp {force_unit}", "dS eV/A^3", "status"]
    rows = []
    for i, s in enumerate(report.structures):
        mine = {c.quantity: c.measured for c in checks if c.structure == i}
        bad = [c.quantity for c in checks if c.structure == i and c.failed]
        rows.append(
            [
                s.label,
                s.n_atoms,
                mine.get("energy"),
                max([mine[q] for q in ("forces", "direct forces") if q in mine], default=None),
                max([mine[q] for q in ("stress", "direct stress") if q in mine], default=None),
                "FAIL: " + ", ".join(bad) if bad else "ok",
            ]
        )
    rows.append(["tolerance", "", tol["energy"], tol["force"], tol["stress"], ""])
    atom_index, atom_error = worst_atom
    matrix = np.array2string(np.round(rotation, 3), separator=", ", suppress_small=True)
    lines = [
        f"equivariance assertion failed for {report.model} "
        f"({report.dtype}, {report.n_operations} operations, seed {report.seed}): "
        f"{len(failed)} check(s) over tolerance",
        format_table(headers, rows),
        f"worst: {worst.quantity} of structure {r.label} = {worst.measured:.3e} "
        f"(tolerance {worst.tolerance:.3e}, {worst.ratio:.3g}x)",
        f"worst structure: {r.label} ({r.n_atoms} atoms)",
        f"operation: #{worst.operation}, det {det:+.0f} ({'proper' if det > 0 else 'improper'})",
        "  R = " + matrix.replace("\n", "\n      "),
    ]
    if atom_index is not None:
        lines.append(f"worst atom: index {atom_index}, |dF_i| = {atom_error:.3e} eV/A under this operation")
    return "\n".join(lines)


def assert_equivariant(
    calculator_or_model,
    atoms,
    *,
    rotations: Optional[Sequence] = None,
    n_rotations: int = 8,
    seed: Optional[int] = 0,
    energy_tol: Optional[float] = None,
    force_tol: Optional[float] = None,
    stress_tol: Optional[float] = None,
    relative: bool = False,
    dtype: Optional[str] = None,
    direct: bool = True,
) -> EquivarianceReport:
    """Assert that a calculator or model is O(3)-equivariant on ``atoms``.

    ``calculator_or_model``: any ASE calculator (each structure, rotated with its cell
    by each operation, is evaluated one at a time), a TorchSim ``ModelInterface``
    (Orb, MACE, ...: the rotated copies batched as systems of one state), a
    :class:`~ase_symdiag.SymDiagCalculator`, a metatomic ``.pt`` path, an
    ``AtomisticModel`` or a :class:`~ase_symdiag.ModelHandle` (batched through
    :func:`~ase_symdiag.check_equivariance`; ``direct=True`` also checks the model's
    non-conservative forces/stress when it has them). A SymDiagCalculator with
    ``symmetrize=``, ``corrections=`` or ``non_conservative=`` is evaluated through its
    ASE interface like any calculator: its averaged/corrected outputs are tested.
    ``atoms``: an ``ase.Atoms``, a list of them, or a ``{name: Atoms}`` dict.
    Operations: ``n_rotations`` seeded Haar-random ones (every second improper)
    followed by ``rotations``.

    Tolerances (``None``: the noise floor :data:`TOLERANCES` of ``dtype``, which
    defaults to the model's dtype and to float64 for generic ASE calculators):

    - ``energy_tol``: eV/atom, on ``max_R |E(Rx) - E(x)| / N``;
    - ``force_tol``: eV/Å, on the largest over operations of the RMS (per component,
      over atoms and x, y, z) of ``F(Rx) - F(x) R^T``; with ``relative=True`` on that
      RMS divided by ``max(RMS force component of x, RELATIVE_FORCE_FLOOR = 1 meV/Å)``
      (default: the float floor for an RMS force of 1 eV/Å);
    - ``stress_tol``: eV/Å^3, on ``max_R ||S(Rx) - R S(x) R^T||_F`` (fully periodic
      structures only).

    Returns the :class:`~ase_symdiag.EquivarianceReport` (``print(report.table())``).
    Raises ``AssertionError`` with a table of the measured errors, the worst
    structure, operation and atom otherwise.
    """
    __tracebackhide__ = True
    labelled = _labelled_atoms(atoms)
    predictions = None
    if _is_model(calculator_or_model):
        handle = _handle_of(calculator_or_model, dtype)
        structures = [from_atoms(a, label=label) for label, a in labelled]
        report = check_equivariance(
            handle, structures, n_rotations=n_rotations, seed=seed, rotations=rotations, direct=direct
        )
        dtype = report.dtype
    elif _is_torchsim(calculator_or_model):  # batched as systems of one state
        operations = check_operations(n_rotations, seed, rotations)
        report, predictions = equivariance_with_predictions(
            calculator_or_model, [from_atoms(a, label=label) for label, a in labelled], operations, seed=seed,
            direct=direct,
        )
        dtype = dtype or (report.dtype if report.dtype in TOLERANCES else "float64")
        handle = None
    else:
        own = getattr(calculator_or_model, "parameters", None) or {}
        # a SymDiagCalculator's rounding is its model's dtype; other calculators float64
        dtype = dtype or (own.get("dtype") if own.get("dtype") in TOLERANCES else "float64")
        operations = check_operations(n_rotations, seed, rotations)
        report, predictions = calculator_equivariance(calculator_or_model, labelled, operations, seed=seed, dtype=dtype)
        handle = None

    defaults = TOLERANCES[dtype]
    tol = {
        "energy": defaults["energy"] if energy_tol is None else float(energy_tol),
        "force": (defaults["relative_force" if relative else "force"] if force_tol is None else float(force_tol)),
        "stress": defaults["stress"] if stress_tol is None else float(stress_tol),
    }
    checks = _checks(report, tol, relative)
    if any(c.failed for c in checks):
        _fail(report, checks, tol, relative, labelled, predictions, handle)
    return report


def _fail(report, checks, tol, relative, labelled, predictions, handle):
    __tracebackhide__ = True
    worst = max((c for c in checks if c.failed), key=lambda c: c.ratio)
    rotation = report.operations[worst.operation]
    direct = worst.quantity.startswith("direct")
    forces = None
    if predictions is not None:
        p = predictions[worst.structure]
        if p.forces is not None:
            forces = p.forces[[0, worst.operation + 1]]
    else:
        from ase_symdiag.backends.metatomic.evaluation import evaluate

        label, atoms = labelled[worst.structure]
        p = evaluate(
            handle,
            from_atoms(atoms, label=label),
            np.stack([np.eye(3), rotation]),
            forces=not direct,
            stress=False,
            direct=direct,
        )
        forces = p.direct_forces if direct else p.forces
    message = _failure_message(report, checks, tol, relative, _worst_atom(forces, rotation))
    raise AssertionError(message)


# --------------------------------------------------------------------------------------
# symmetrized calculators
# --------------------------------------------------------------------------------------


class SymmetrizedReports(NamedTuple):
    """Result of :func:`assert_symmetrized_equivariant`."""

    group: EquivarianceReport  # under the group's own operations (asserted exact)
    random: Optional[EquivarianceReport]  # under random operations (asserted if tolerances given)


def _group_closure_error(group: np.ndarray) -> float:
    """Largest distance of a product ``g h`` from its nearest element of ``group``."""
    products = np.einsum("aij,bjk->abik", group, group).reshape(-1, 9)
    flat = group.reshape(-1, 9)
    distances = np.abs(products[:, None, :] - flat[None, :, :]).max(axis=2)
    return float(distances.min(axis=1).max())


def assert_symmetrized_equivariant(
    calculator,
    atoms,
    *,
    rotations: Sequence,
    degree: Optional[int] = None,
    n_rotations: int = 8,
    seed: Optional[int] = 0,
    energy_tol: Optional[float] = None,
    force_tol: Optional[float] = None,
    stress_tol: Optional[float] = None,
    random_tolerances: Optional[Dict[str, float]] = None,
    relative: bool = False,
    dtype: Optional[str] = None,
) -> SymmetrizedReports:
    """Assert what a group-averaged (symmetrized) calculator promises.

    A calculator whose outputs are averaged over a finite group ``G`` of O(3)
    operations, ``y_sym(x) = 1/|G| sum_g rho(g)^-1 y(g x)``, is *exactly* equivariant
    under every operation of ``G`` (the sum is only re-ordered), whatever the
    underlying model. Pass the group's matrices as ``rotations``; they are checked to
    close under multiplication (a quadrature that is not a group, such as a
    Lebedev grid, does not make this promise), and the outputs are asserted
    equivariant under them to the noise floor (or ``energy_tol``, ``force_tol``,
    ``stress_tol``; averaging does not amplify rounding errors).

    ``degree`` L: the calculator promises to remove every symmetry breaking of angular
    degree 1 <= l <= L. This holds when no O(3) irrep (l, parity) with l <= L has an
    invariant vector under ``G`` (:func:`invariant_counts`), which is asserted. What
    remains under *random* operations is the model's breaking above L, whose size no
    generic test can know: with ``random_tolerances`` (``{"energy": eV/atom, "force":
    eV/Å, "stress": eV/Å^3}``, missing keys: noise floor) the outputs are also
    asserted equivariant under ``n_rotations`` Haar-random operations; without, they
    are only measured (``.random`` of the result).

    Takes any ASE calculator (or what :func:`assert_equivariant` accepts).
    """
    __tracebackhide__ = True
    group = validate_rotations(rotations)
    closure = _group_closure_error(group)
    if closure > 1e-6:
        raise UsageError(
            f"the {len(group)} rotations do not form a group (a product is {closure:.2g} away "
            "from every element); exact equivariance is only promised for a group average"
        )
    if degree is not None:
        missed = {k: v for k, v in invariant_counts(group, degree).items() if abs(v) > 1e-8}
        if missed:
            text = ", ".join(f"l={l}{'+' if p > 0 else '-'}: {v:.3g}" for (l, p), v in missed.items())
            raise AssertionError(
                f"a {len(group)}-element group average is not exact to degree {degree}: "
                f"irreps with invariant vectors ({text})"
            )
    exact = assert_equivariant(
        calculator,
        atoms,
        rotations=group,
        n_rotations=0,
        seed=None,
        energy_tol=energy_tol,
        force_tol=force_tol,
        stress_tol=stress_tol,
        relative=relative,
        dtype=dtype,
    )
    random = None
    if n_rotations > 0:
        if random_tolerances is not None:
            random = assert_equivariant(
                calculator,
                atoms,
                n_rotations=n_rotations,
                seed=seed,
                energy_tol=random_tolerances.get("energy"),
                force_tol=random_tolerances.get("force"),
                stress_tol=random_tolerances.get("stress"),
                relative=relative,
                dtype=dtype,
            )
        else:
            random = _measure(calculator, atoms, n_rotations, seed, dtype)
    return SymmetrizedReports(group=exact, random=random)


def _measure(calculator, atoms, n_rotations, seed, dtype) -> EquivarianceReport:
    """The report of :func:`assert_equivariant` without asserting anything."""
    return assert_equivariant(
        calculator,
        atoms,
        n_rotations=n_rotations,
        seed=seed,
        energy_tol=math.inf,
        force_tol=math.inf,
        stress_tol=math.inf,
        dtype=dtype,
    )


__all__ = [
    "NOISE_ASSUMPTIONS",
    "TOLERANCES",
    "SymmetrizedReports",
    "assert_equivariant",
    "assert_symmetrized_equivariant",
    "invariant_counts",
    "noise_floor",
]
