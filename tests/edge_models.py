"""Small metatomic models at the edges of what exports and the calculator accept.

- :func:`nm_kcal_model`: the equivariant Morse potential of the fixtures written in
  nm and kcal/mol (energy unit kcal/mol, length unit nm): engines convert, so it is
  the same physics in other units.
- :class:`InputsModel`: ``E = sum_i m_i (v_i . x_i)`` from the requested inputs
  (masses, velocities), forces ``-m_i v_i``; optionally with a neighbour list it reads
  (with weight zero), else none.
- :class:`VariantModel`: energy variants ``energy/low`` and ``energy/high``
  (``E = c sum_i |x_i|^2``, c = 1 and 2) and no default ``energy``.
- :class:`BrokenModel`: an energy that raises, or is NaN, on every call.
"""

from typing import Dict, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput, NeighborListOptions, System, unit_conversion_factor,
)

from ase_symdiag.reference.analytic import CU_MORSE, PairPotential

#: nm per Å
NM = 0.1


def _capabilities(outputs: Dict[str, ModelOutput], length_unit: str = "angstrom", range_: float = 0.0) -> ModelCapabilities:
    return ModelCapabilities(
        outputs=outputs, atomic_types=[1, 8, 29], interaction_range=range_, length_unit=length_unit,
        supported_devices=["cpu"], dtype="float64",
    )


def nm_kcal_model(path) -> str:
    """The fixtures' equivariant Morse potential (cutoff 5 Å) in nm and kcal/mol, saved to ``path``."""
    kcal = unit_conversion_factor("eV", "kcal/mol")  # metatomic's own factor: conversions cancel exactly
    module = PairPotential(
        cutoff=5.0 * NM, depth=CU_MORSE["depth"] * kcal, alpha=CU_MORSE["alpha"] / NM, r0=CU_MORSE["r0"] * NM, direct=True,
    ).eval()
    outputs = {
        "energy": ModelOutput(unit="kcal/mol", sample_kind="atom"),
        "non_conservative_force": ModelOutput(unit="kcal/mol/nm", sample_kind="atom"),
        "non_conservative_stress": ModelOutput(unit="kcal/mol/nm^3", sample_kind="system"),
    }
    AtomisticModel(module, ModelMetadata(), _capabilities(outputs, "nm", 5.0 * NM)).save(str(path))
    return str(path)


def _energy_map(energy: torch.Tensor) -> TensorMap:
    samples = Labels("system", torch.arange(energy.shape[0], dtype=torch.int32).reshape(-1, 1))
    block = TensorBlock(energy.reshape(-1, 1), samples, [], Labels("energy", torch.tensor([[0]])))
    return TensorMap(Labels("_", torch.tensor([[0]])), [block])


class InputsModel(torch.nn.Module):
    """``E = sum_i m_i (v_i . x_i)`` (+ 0 x the neighbour vectors, when it has a list)."""

    _lists: List[NeighborListOptions]

    def __init__(self, neighbors: bool) -> None:
        super().__init__()
        self._lists = [NeighborListOptions(cutoff=3.0, full_list=False, strict=True)] if neighbors else []

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self._lists

    def requested_inputs(self) -> Dict[str, ModelOutput]:
        return {
            "mass": ModelOutput(unit="u", sample_kind="atom"),
            "velocity": ModelOutput(unit="(eV/u)^(1/2)", sample_kind="atom"),
        }

    def forward(
        self, systems: List[System], outputs: Dict[str, ModelOutput], selected_atoms: Optional[Labels] = None
    ) -> Dict[str, TensorMap]:
        energies: List[torch.Tensor] = []
        for system in systems:
            mass = system.get_data("mass").block().values.reshape(-1)
            velocity = system.get_data("velocity").block().values.reshape(-1, 3)
            energy = (mass * (velocity * system.positions).sum(dim=1)).sum()
            for options in self._lists:
                energy = energy + 0.0 * system.get_neighbor_list(options).values.sum()
            energies.append(energy)
        return {"energy": _energy_map(torch.stack(energies))}


def inputs_model(neighbors: bool) -> AtomisticModel:
    module = InputsModel(neighbors).eval()
    outputs = {"energy": ModelOutput(unit="eV", sample_kind="system")}
    return AtomisticModel(module, ModelMetadata(), _capabilities(outputs, range_=3.0 if neighbors else 0.0))


class VariantModel(torch.nn.Module):
    """``energy/low`` = sum_i |x_i|^2 eV/Å^2, ``energy/high`` twice that."""

    def forward(
        self, systems: List[System], outputs: Dict[str, ModelOutput], selected_atoms: Optional[Labels] = None
    ) -> Dict[str, TensorMap]:
        energies: List[torch.Tensor] = []
        for system in systems:
            energies.append((system.positions**2).sum())
        energy = torch.stack(energies)
        results: Dict[str, TensorMap] = {}
        for name in outputs.keys():
            results[name] = _energy_map(energy * (2.0 if name.endswith("/high") else 1.0))
        return results


def variant_model() -> AtomisticModel:
    outputs = {name: ModelOutput(unit="eV", sample_kind="system") for name in ("energy/low", "energy/high")}
    return AtomisticModel(VariantModel().eval(), ModelMetadata(), _capabilities(outputs))


class BrokenModel(torch.nn.Module):
    """An energy that raises (``mode="raise"``) or is NaN (``mode="nan"``) on every call."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(
        self, systems: List[System], outputs: Dict[str, ModelOutput], selected_atoms: Optional[Labels] = None
    ) -> Dict[str, TensorMap]:
        if self.mode == "raise":
            raise ValueError("this model is broken")
        energies: List[torch.Tensor] = []
        for system in systems:
            energies.append(system.positions.sum() * float("nan"))
        return {"energy": _energy_map(torch.stack(energies))}


def broken_model(mode: str) -> AtomisticModel:
    outputs = {"energy": ModelOutput(unit="eV", sample_kind="system")}
    return AtomisticModel(BrokenModel(mode).eval(), ModelMetadata(), _capabilities(outputs))
