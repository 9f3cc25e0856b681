"""Predictions and the loss of the reference PET on collated batches.

- :func:`predict`: energies (eV) of a batch from :func:`ase_symdiag.reference.samples.collate`,
  conservative forces ``-dE/dx`` (eV/Å) and stress ``dE/de / V`` (eV/Å^3) by autograd,
  and optionally Orb-v3's "equigrad" rotational gradient;
- :func:`weighted_loss`: the training loss;
- :func:`evaluate_samples`: MAE/RMSE on unrotated structures.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from ase_symdiag.backends.metatomic.model import NC_FORCE
from ase_symdiag.reference.samples import Sample, collate


def predict(
    model: torch.nn.Module, batch: dict, *, forces: bool, stress: bool, create_graph: bool, rotational_gradient: bool = False
) -> dict:
    """Energies (and conservative forces/stress by autograd) of a collated batch.

    With ``rotational_gradient``, also ``"rotational_gradient"`` (n_systems, 3, 3):
    ``A = (W - W^T)/2`` with ``W = dE/d(eps)`` (eV) for the identity strain ``eps``
    that multiplies positions and cell (``x -> x eps``), computed for EVERY structure
    (finite ones too, where the cell does not enter). ``W = V sigma`` for periodic
    structures; a rotation ``x -> x exp(theta K)``, ``K = -K^T``, changes the energy by
    ``theta <A, K>_F``, so ``A = 0`` for an exactly rotation-invariant energy (Orb-v3's
    "equigrad", dE/dG at G = 0 for R = exp(G - G^T), is ``2 A``).
    """
    n_systems = batch["n_systems"]
    dtype = batch["positions"].dtype
    positions = batch["positions"].clone().requires_grad_(forces)
    want_strain = stress or rotational_gradient
    strain = torch.eye(3, dtype=dtype).repeat(n_systems, 1, 1).requires_grad_(want_strain)
    strained = torch.einsum("ni,nij->nj", positions, strain[batch["atom_system"]])
    cells = torch.bmm(batch["cells"], strain)
    vectors = (
        strained[batch["second"]]
        - strained[batch["first"]]
        + torch.einsum("ei,eij->ej", batch["shifts"], cells[batch["edge_system"]])
    )
    out = model.compute(vectors, batch["first"], batch["second"], batch["reverse"], batch["species"])
    energy = torch.zeros(n_systems, dtype=dtype).index_add(0, batch["atom_system"], out["energy"])
    result = {"energy": energy}
    if NC_FORCE in out:
        result["direct_forces"] = out[NC_FORCE]
    inputs = ([positions] if forces else []) + ([strain] if want_strain else [])
    if inputs:
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
        if forces:
            result["forces"] = -grads[0]
        if stress:
            result["stress"] = grads[-1] / batch["volumes"].reshape(-1, 1, 1)
        if rotational_gradient:
            result["rotational_gradient"] = 0.5 * (grads[-1] - grads[-1].transpose(1, 2))
    return result


def weighted_loss(prediction: dict, batch: dict, weights: Dict[str, float]) -> torch.Tensor:
    """The training loss of a batch: weighted MSE of per-atom energy (eV/atom)^2,
    conservative and direct forces (eV/Å)^2, stress (eV/Å^3)^2 and, with
    ``weights["equigrad"] > 0``, the mean ``||A||_F^2`` (eV^2) of the rotational gradient."""
    loss = weights["energy"] * torch.mean(
        ((prediction["energy"] - batch["energy"]) / batch["n_atoms"]) ** 2
    )
    target_forces = batch["forces"]
    has_forces = ~torch.isnan(target_forces[:, 0])
    if "forces" in prediction and bool(has_forces.any()):
        loss = loss + weights["forces"] * torch.mean(
            (prediction["forces"][has_forces] - target_forces[has_forces]) ** 2
        )
    if "direct_forces" in prediction and bool(has_forces.any()) and weights.get("direct_forces", 0) > 0:
        loss = loss + weights["direct_forces"] * torch.mean(
            (prediction["direct_forces"][has_forces] - target_forces[has_forces]) ** 2
        )
    mask = batch["stress_mask"]
    if "stress" in prediction and bool(mask.any()):
        loss = loss + weights["stress"] * torch.mean(
            (prediction["stress"][mask] - batch["stress"][mask]) ** 2
        )
    if "rotational_gradient" in prediction and weights.get("equigrad", 0) > 0:
        loss = loss + weights["equigrad"] * torch.mean(prediction["rotational_gradient"].pow(2).sum(dim=(1, 2)))
    return loss


def evaluate_samples(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    dtype: torch.dtype,
    batch_size: int = 16,
    rotational_gradient: bool = False,
) -> dict:
    """MAE/RMSE of energy (meV/atom), forces (meV/Å), stress (meV/Å^3, GPa) and, with
    the direct head, direct forces, on unrotated ``samples``. With
    ``rotational_gradient``, also ``rotational_gradient_eV``: ``mean_sq`` (the equigrad
    penalty, mean of ``||A||_F^2``, eV^2), ``rms`` and ``max`` of ``||A||_F`` (eV)."""
    from ase.units import GPa

    e_err, f_err, s_err, d_err, a_norm = [], [], [], [], []
    want_stress = any(s.stress is not None for s in samples)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = collate(chunk, None, dtype)
        prediction = predict(
            model, batch, forces=True, stress=want_stress, create_graph=False, rotational_gradient=rotational_gradient
        )
        if rotational_gradient:
            a_norm.append(prediction["rotational_gradient"].detach().double().pow(2).sum(dim=(1, 2)).sqrt())
        e_err.append(((prediction["energy"] - batch["energy"]) / batch["n_atoms"]).detach().double())
        has_forces = ~torch.isnan(batch["forces"][:, 0])
        f_err.append((prediction["forces"] - batch["forces"])[has_forces].detach().double().reshape(-1))
        if "direct_forces" in prediction:
            d_err.append((prediction["direct_forces"] - batch["forces"])[has_forces].detach().double().reshape(-1))
        if want_stress and bool(batch["stress_mask"].any()):
            mask = batch["stress_mask"]
            s_err.append((prediction["stress"] - batch["stress"])[mask].detach().double().reshape(-1))

    def stats(errors: List[torch.Tensor], scale: float) -> Optional[dict]:
        if not errors:
            return None
        e = torch.cat(errors) * scale
        if e.numel() == 0:
            return None
        return {"mae": float(e.abs().mean()), "rmse": float(torch.sqrt((e**2).mean()))}

    metrics = {
        "n_structures": len(samples),
        "energy_meV_per_atom": stats(e_err, 1000.0),
        "forces_meV_per_A": stats(f_err, 1000.0),
    }
    if s_err:
        metrics["stress_meV_per_A3"] = stats(s_err, 1000.0)
        metrics["stress_GPa"] = stats(s_err, 1.0 / GPa)
    if d_err:
        metrics["direct_forces_meV_per_A"] = stats(d_err, 1000.0)
    if a_norm:
        a = torch.cat(a_norm)
        metrics["rotational_gradient_eV"] = {
            "mean_sq": float((a**2).mean()),
            "rms": float(torch.sqrt((a**2).mean())),
            "max": float(a.max()),
        }
    return metrics
