"""The variants an MD run compares: raw, symmetrized and corrected models, or any ASE calculator.

- ``"raw"``: :class:`~ase_symdiag.calculator.SymDiagCalculator` on the model;
- ``"symmetrized"``: the same with ``symmetrize=<quadrature>`` (default degree 3);
- ``"corrected"``: the same with ``corrections=["net_force", "net_torque"]`` (only
  ``"net_force"`` for periodic structures, where a torque is not defined);
- any ASE calculator, under a name of your choice.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ase import Atoms
from ase.calculators.calculator import Calculator

from ase_symdiag.errors import SymDiagError, UsageError
from ase_symdiag.md.common import check_variant_names
from ase_symdiag.md.errors import MDError

KNOWN_VARIANTS = ("raw", "symmetrized", "corrected")

#: what :func:`run_md <ase_symdiag.md.runner.run_md>` accepts as ``variants``
VariantSpec = Union[str, Sequence[Any], Mapping[str, Any]]


def corrections_for(atoms: Atoms) -> List[str]:
    """The corrections of the ``corrected`` variant: no net torque for periodic structures."""
    return ["net_force"] if atoms.pbc.any() else ["net_force", "net_torque"]


def corrected_description(atoms: Atoms) -> str:
    """What the ``corrected`` variant does to ``atoms`` with a conservative model.

    Conservative forces of an energy that depends on relative positions only already
    sum to zero, so ``net_force`` changes nothing but round-off; on a finite structure
    ``net_torque`` removes the torque of the rotational breaking. On a periodic
    structure the variant therefore cannot change the trajectory, and says so.
    """
    names = ", ".join(corrections_for(atoms))
    if atoms.pbc.any():
        return f"corrected ({names}; no effect here: conservative forces already sum to zero)"
    return f"corrected ({names}; removes the net torque, the net force is already zero)"


def make_calculator(kind: str, handle: Any, atoms: Atoms, *, symmetrize: Any = 3, batch_size: int = 16) -> Calculator:
    """The calculator of a named variant (``raw``, ``symmetrized``, ``corrected``).

    ``handle``: a :class:`~ase_symdiag.backends.metatomic.model.ModelHandle` (or
    anything SymDiagCalculator loads); ``symmetrize``: the quadrature of the
    symmetrized variant (a degree or a name); ``batch_size``: rotated copies per call.
    """
    from ase_symdiag.calculator import SymDiagCalculator

    if kind == "raw":
        return SymDiagCalculator(handle)
    if kind == "symmetrized":
        try:
            return SymDiagCalculator(handle, symmetrize=symmetrize, batch_size=batch_size)
        except SymDiagError as error:
            if not isinstance(error, UsageError):
                raise
            raise MDError(f"variant 'symmetrized': {error}") from None
        except ValueError as error:  # a bad quadrature or batch size: the user's input
            raise MDError(f"variant 'symmetrized': {error}") from None
    if kind == "corrected":
        return SymDiagCalculator(handle, corrections=corrections_for(atoms))
    raise MDError(f"unknown variant {kind!r}; expected one of {', '.join(KNOWN_VARIANTS)} or an ASE calculator")


def _named_specs(model_or_calculators: Any, variants: VariantSpec) -> Tuple[List[Tuple[str, Any]], Any]:
    """-> ([(name, variant name or calculator)], model or None)."""
    if isinstance(model_or_calculators, Calculator):
        model_or_calculators = {"calculator": model_or_calculators}
    if isinstance(model_or_calculators, Mapping):
        return list(model_or_calculators.items()), None
    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",") if v.strip()]
    if isinstance(variants, Mapping):
        return list(variants.items()), model_or_calculators
    items: List[Tuple[str, Any]] = []
    for variant in variants:
        if isinstance(variant, Calculator):
            items.append((type(variant).__name__, variant))
        elif isinstance(variant, (tuple, list)) and len(variant) == 2:
            items.append((str(variant[0]), variant[1]))
        else:
            items.append((str(variant), str(variant)))
    return items, model_or_calculators


def resolve_variants(model_or_calculators: Any, atoms: Atoms, variants: VariantSpec, *, device: Optional[str],
                     dtype: Optional[str], symmetrize: Any, batch_size: int) -> Dict[str, Tuple[Calculator, str]]:
    """``{name: (calculator, description)}`` of every variant, in order.

    ``model_or_calculators``: a metatomic model (path, AtomisticModel or ModelHandle,
    loaded once on ``device`` in ``dtype``) for the named variants, an ASE calculator,
    or a dict ``{name: calculator}``. Names become file names, so they must be unique
    and free of path separators and spaces.
    """
    items, model = _named_specs(model_or_calculators, variants)
    check_variant_names([name for name, _ in items])
    handle = None
    resolved: Dict[str, Tuple[Calculator, str]] = {}
    for name, spec in items:
        if isinstance(spec, Calculator):
            resolved[name] = (spec, type(spec).__name__)
            continue
        if not isinstance(spec, str):
            raise MDError(f"variant {name!r}: expected a variant name or an ASE calculator, got {type(spec).__name__}")
        if spec not in KNOWN_VARIANTS:
            raise MDError(f"unknown variant {spec!r}; expected one of {', '.join(KNOWN_VARIANTS)} or an ASE calculator")
        if model is None:
            raise MDError(f"variant {spec!r} needs a model, but only calculators were given")
        if handle is None:
            from ase_symdiag.backends.metatomic.model import ModelHandle

            handle = model if isinstance(model, ModelHandle) else ModelHandle.load(model, device=device, dtype=dtype)
        calc = make_calculator(spec, handle, atoms, symmetrize=symmetrize, batch_size=batch_size)
        description = spec
        if spec == "symmetrized":
            description = f"symmetrized ({calc.quadrature.name}, {calc.quadrature.size} ops)"
        elif spec == "corrected":
            description = corrected_description(atoms)
        resolved[name] = (calc, description)
    if handle is not None:  # an element the model lacks: an error before any step
        handle.check_types(atoms.numbers, "MD structure")
    return resolved
