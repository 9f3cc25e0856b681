"""ASE calculator over any metatomic model, with the equivariance check attached."""

from __future__ import annotations

from typing import List, Literal, Optional, Union

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .evaluation import evaluate
from .metatomic_model import ModelHandle
from .structures import from_atoms
from .transforms import voigt_from_tensor


class SymDiagCalculator(Calculator):
    """ASE calculator for a metatomic model (``.pt`` file or AtomisticModel).

    Results: ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å, conservative,
    ``-dE/dx`` by autograd), ``stress`` (Voigt 6: xx, yy, zz, yz, xz, xy, eV/Å^3,
    fully periodic structures only) and ``energies`` (per-atom, eV) when the model
    has per-atom energies. With ``non_conservative=True`` (or ``"forces"`` /
    ``"stress"``) forces and/or stress come from the model's direct heads instead.

    Everything is computed in one model call and cached by ASE's ``check_state``
    until the atoms change.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]
    default_parameters: dict = {}

    def __init__(
        self,
        model,
        *,
        device: Optional[str] = None,
        dtype: Optional[Literal["float32", "float64"]] = None,
        non_conservative: Union[bool, Literal["forces", "stress"]] = False,
        **kwargs,
    ) -> None:
        if non_conservative not in (True, False, "forces", "stress"):
            raise ValueError(
                f"non_conservative must be True, False, 'forces' or 'stress', got {non_conservative!r}"
            )
        super().__init__(**kwargs)
        self.handle = model if isinstance(model, ModelHandle) else ModelHandle.load(model, device=device, dtype=dtype)
        direct_forces = non_conservative in (True, "forces")
        direct_stress = non_conservative in (True, "stress")
        if direct_forces and not self.handle.has_direct_forces:
            raise ValueError(
                f"non_conservative={non_conservative!r}: model '{self.handle.source}' has no "
                "'non_conservative_force' output"
            )
        if direct_stress and not self.handle.has_direct_stress:
            raise ValueError(
                f"non_conservative={non_conservative!r}: model '{self.handle.source}' has no "
                "'non_conservative_stress' output"
            )
        self._direct_forces = direct_forces
        self._direct_stress = direct_stress
        self.parameters.update(
            model=self.handle.source,
            device=str(self.handle.device),
            dtype=str(self.handle.dtype).replace("torch.", ""),
            non_conservative=non_conservative,
        )

    def calculate(
        self,
        atoms=None,
        properties: List[str] = ("energy",),
        system_changes: List[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        structure = from_atoms(self.atoms)
        if "stress" in properties and not structure.periodic:
            raise PropertyNotImplementedError(
                f"stress is only defined for structures periodic in all directions "
                f"(pbc={structure.pbc.tolist()})"
            )
        prediction = evaluate(
            self.handle,
            structure,
            forces=not self._direct_forces,
            stress=not self._direct_stress,
            energies=True,
            direct=self._direct_forces or self._direct_stress,
        )
        energy = float(prediction.energy[0])
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        if prediction.energies is not None:
            self.results["energies"] = prediction.energies[0]
        forces = prediction.direct_forces if self._direct_forces else prediction.forces
        self.results["forces"] = np.array(forces[0])
        stress = prediction.direct_stress if self._direct_stress else prediction.stress
        if stress is not None:
            self.results["stress"] = voigt_from_tensor(stress[0])

    def check_equivariance(self, structures=None, **kwargs):
        """Run :func:`ase_symdiag.check_equivariance` with this calculator's model.

        ``structures`` defaults to the calculator's current atoms.
        """
        from .equivariance import check_equivariance

        if structures is None:
            if self.atoms is None:
                raise ValueError("no structures given and the calculator has no atoms yet")
            structures = self.atoms
        return check_equivariance(self.handle, structures, **kwargs)
