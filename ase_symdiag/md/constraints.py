"""ASE constraints in MD runs: stored in checkpoints, compared on resume, handed to TorchSim.

The ASE engine honours every ASE constraint (ASE's integrators apply them). A resumed
run gets back the constraints of its checkpoint, and the settings check compares
them (:func:`describe`). The TorchSim engine honours the constraints TorchSim 0.6 has
(:data:`TORCHSIM_CONSTRAINTS`: ``FixAtoms``, ``FixCom``) and refuses any other,
naming it, instead of integrating as if it were not there.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from ase import Atoms

from ase_symdiag.md.errors import MDError

#: ASE constraints the TorchSim engine honours (through ``torch_sim.constraints``)
TORCHSIM_CONSTRAINTS = ("FixAtoms", "FixCom")


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as JSON types."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def describe(atoms: Atoms) -> List[Dict[str, Any]]:
    """The constraints of ``atoms`` as JSON-ready dicts (ASE's ``todict``, after a
    JSON round trip so that a stored copy compares equal); [] without constraints."""
    described = []
    for constraint in atoms.constraints:
        try:
            data = json.loads(json.dumps(constraint.todict(), default=_plain))
        except (AttributeError, NotImplementedError, TypeError, ValueError) as error:
            raise MDError(
                f"the ASE constraint {type(constraint).__name__} cannot be stored in an MD checkpoint ({error})"
            ) from None
        described.append(data)
    return described


def restore(described: List[Dict[str, Any]]) -> list:
    """ASE constraint objects from :func:`describe`'s dicts."""
    from ase.constraints import dict2constraint

    return [dict2constraint(dict(data)) for data in described]


def torchsim_constraints(atoms: Atoms, n_systems: int, device: Any = None) -> list:
    """``torch_sim`` constraints (on ``device``) doing to each of ``n_systems``
    consecutive copies of ``atoms`` (one batched state, ``len(atoms)`` atoms each) what
    ``atoms``' ASE constraints do; raises :class:`MDError` naming a constraint TorchSim
    cannot honour."""
    import torch
    from torch_sim.constraints import FixAtoms, FixCom

    from ase.constraints import FixAtoms as AseFixAtoms, FixCom as AseFixCom

    n_atoms = len(atoms)
    result = []
    for constraint in atoms.constraints:
        if type(constraint) is AseFixAtoms:
            fixed = torch.as_tensor(constraint.get_indices(), dtype=torch.long)
            offsets = torch.arange(n_systems, dtype=torch.long) * n_atoms
            result.append(FixAtoms(atom_idx=(offsets[:, None] + fixed[None, :]).flatten()).to(device=device))
        elif type(constraint) is AseFixCom:
            result.append(FixCom(system_idx=torch.arange(n_systems, dtype=torch.long)).to(device=device))
        else:
            raise MDError(
                f"the TorchSim engine cannot honour the ASE constraint {type(constraint).__name__} "
                f"(it supports {', '.join(TORCHSIM_CONSTRAINTS)}); use --engine ase"
            )
    return result
