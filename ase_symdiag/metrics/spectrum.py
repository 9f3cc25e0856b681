"""The symmetry-breaking spectrum of a model's orientation dependence.

For one structure x and an output y, ``g(R) = rho(R)^-1 y(Rx)`` is a function on
O(3), constant for an equivariant model. Expanding each component of g in the
O(3) irreps ``D^{lambda,sigma}`` (sigma = sign under the inversion),
``g(R) = sum c^{lambda,sigma}_{ab} D^{lambda,sigma}_{ab}(R)`` with
``c = (2 lambda + 1) <g D>``, Parseval gives ``<|g|^2> = sum |c|^2 / (2 lambda + 1)``:

- ``(0, +)`` is ``|<g>|^2``, the symmetrized prediction;
- every other channel is symmetry breaking and they add up to the variance over
  the group, ``Var = <|g - <g>|^2>``.

Powers are computed by quadrature; a channel lambda is resolved exactly when the
quadrature is exact to degree ``2 lambda_max`` and g is band-limited (METHODS.md
section 5c). ``unresolved`` = Var minus the resolved channels is what lies above
``lambda_max`` (or aliasing when g is not band-limited).

Parity convention: sigma is the sign of the channel's basis functions under the
inversion itself, so a polar vector sits in (1, -) and a pseudoscalar in (0, -).
``metatomic.torch.o3`` labels channels relative to the natural parity (-1)^lambda
instead: its ``chi_sigma`` is our sigma times (-1)^lambda.

Units: energy power in eV^2; forces in (eV/Å)^2 per atom (sum over x, y, z, mean
over atoms); stress in (eV/Å^3)^2 (Frobenius). RMS *amplitudes* (tables, plots,
``rms_breaking``) divide a per-atom vector's power by its ``components`` (3): the
force breaking is the RMS per component over atoms and x, y, z, in eV/Å, the one
normalisation of ``ase-symdiag check`` and of the adaptive choice's residual.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ase_symdiag.o3.irreps import Channel, channel_basis
from ase_symdiag.o3.quadrature import O3Quadrature


def channel_powers(values: np.ndarray, quadrature: O3Quadrature, lmax: int) -> Dict[Channel, np.ndarray]:
    """Power of each component of ``values`` (K, ...) in every channel (l <= lmax, sigma).

    Returns ``{(l, sigma): array of shape values.shape[1:]}``. Channels with sigma = -1
    are only present when the quadrature contains improper operations.
    """
    K = values.shape[0]
    flat = values.reshape(K, -1)
    weights = quadrature.weights
    sigmas = (1, -1) if quadrature.improper else (1,)
    out: Dict[Channel, np.ndarray] = {}
    for l in range(lmax + 1):
        for sigma in sigmas:
            basis = channel_basis(l, sigma, quadrature.rotations)
            projection = np.einsum("k,kab,km->abm", weights, basis, flat)
            power = (2 * l + 1) * np.sum(projection**2, axis=(0, 1))
            out[(l, sigma)] = power.reshape(values.shape[1:])
    return out


@dataclass
class OutputSpectrum:
    """Spectrum of one output of one structure (see module docstring for units)."""

    output: str
    unit: str
    mean_square: float  # <|g|^2>
    variance: float  # <|g - <g>|^2>, the total symmetry breaking
    power: Dict[Channel, float]  # resolved channels, (0, +) included
    unresolved: float  # variance minus resolved breaking channels
    per_element: Dict[str, Dict[Channel, float]] = field(default_factory=dict)
    components: int = 1  # entries summed per item in the powers (3 for forces)

    def rms(self, power: float) -> float:
        """RMS amplitude of ``power``, per component: ``sqrt(power / components)``."""
        return float(np.sqrt(power / self.components))

    @property
    def rms_breaking(self) -> float:
        """Total symmetry breaking as an RMS amplitude per component (eV/Å for forces,
        over atoms and x, y, z, as ``check``'s force error)."""
        return self.rms(self.variance)

    @property
    def breaking(self) -> Dict[Channel, float]:
        """Channels other than (0, +)."""
        return {c: p for c, p in self.power.items() if c != (0, 1)}

    def residual(self, degree: int, improper: bool = True) -> float:
        """Breaking power left by a quadrature exact to ``degree``: channels above it."""
        removed = sum(
            p for (l, s), p in self.breaking.items() if l <= degree and (improper or s == 1)
        )
        return max(self.variance - removed, 0.0)

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "unit": self.unit,
            "mean_square": self.mean_square,
            "variance": self.variance,
            "unresolved": self.unresolved,
            "components": self.components,
            "rms_breaking": self.rms_breaking,
            "rms_breaking_definition": (
                f"sqrt(variance / {self.components}): RMS per component over items and components"
                if self.components > 1 else "sqrt(variance)"
            ),
            "power": {_key(c): p for c, p in self.power.items()},
            "per_element": {el: {_key(c): p for c, p in v.items()} for el, v in self.per_element.items()},
        }


def _key(channel: Channel) -> str:
    l, s = channel
    return f"{l}{'+' if s > 0 else '-'}"


def output_spectrum(
    name: str,
    samples: np.ndarray,
    quadrature: O3Quadrature,
    lmax: int,
    *,
    symbols: Optional[List[str]] = None,
    per_item: Optional[bool] = None,
    unit: Optional[str] = None,
) -> OutputSpectrum:
    """Spectrum of back-rotated ``samples`` (K, ...) of one output.

    Per-item outputs (K, N[, ...]) (per atom or per point; by default the atomistic
    ``forces``, ``direct_forces`` and ``energies``) are summed over components and
    averaged over items (and per element when ``symbols`` is given); other outputs
    are summed over components. ``unit`` defaults to the atomistic output's.
    """
    per_atom = name in ("forces", "direct_forces", "energies") if per_item is None else bool(per_item)
    powers = channel_powers(samples, quadrature, lmax)
    weights = quadrature.weights.reshape((-1,) + (1,) * (samples.ndim - 1))
    square = np.sum(weights * samples**2, axis=0)
    mean = np.sum(weights * samples, axis=0)
    variance = np.clip(np.sum(weights * (samples - mean) ** 2, axis=0), 0.0, None)

    def reduce(array: np.ndarray, mask=None) -> float:
        if per_atom:
            per = array.reshape(array.shape[0], -1).sum(axis=1) if array.ndim > 1 else array
            return float(per[mask].mean() if mask is not None else per.mean())
        return float(np.sum(array))

    power = {c: reduce(p) for c, p in powers.items()}
    total_variance = reduce(variance)
    resolved = sum(p for c, p in power.items() if c != (0, 1))
    unresolved = total_variance - resolved
    if unresolved < -1e-8 * max(reduce(square), 1e-300):
        warnings.warn(
            f"{name}: resolved channels exceed the variance by {-unresolved:.3g}: the "
            f"quadrature '{quadrature.name}' (degree {quadrature.degree}) is not exact to "
            f"2*lmax = {2 * lmax}; use a larger quadrature or a smaller lmax",
            RuntimeWarning,
            stacklevel=2,
        )
    per_element = {}
    if per_atom and symbols is not None:
        symbols_array = np.asarray(symbols)
        for element in sorted(set(symbols)):
            mask = symbols_array == element
            per_element[element] = {c: reduce(p, mask) for c, p in powers.items()}
    units = {
        "energy": "eV^2",
        "energies": "eV^2/atom",
        "forces": "(eV/A)^2/atom",
        "direct_forces": "(eV/A)^2/atom",
        "stress": "(eV/A^3)^2",
        "direct_stress": "(eV/A^3)^2",
    }
    return OutputSpectrum(
        output=name,
        unit=units.get(name, "") if unit is None else unit,
        mean_square=reduce(square),
        variance=total_variance,
        power=power,
        unresolved=max(unresolved, 0.0),
        per_element=per_element,
        components=int(np.prod(samples.shape[2:])) if per_atom and samples.ndim > 2 else 1,
    )


@dataclass
class StructureSpectrum:
    """Spectra of every output of one structure."""

    label: str
    n_atoms: int
    lmax: int
    quadrature: str
    outputs: Dict[str, OutputSpectrum]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "n_atoms": self.n_atoms,
            "lmax": self.lmax,
            "quadrature": self.quadrature,
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
        }


def spectrum_table(spectra: List[StructureSpectrum]) -> str:
    """Rows: structure x output; columns: RMS amplitude sqrt(power) of each channel."""
    from ase_symdiag.report import format_table

    if not spectra:
        return ""
    lmax = spectra[0].lmax
    channels = [(l, s) for l in range(lmax + 1) for s in (1, -1) if (l, s) != (0, 1)]
    headers = ["structure", "output", "rms breaking"] + [_key(c) for c in channels] + [f">{lmax}"]
    rows = []
    for spectrum in spectra:
        for name, out in spectrum.outputs.items():
            rows.append(
                [spectrum.label, name, out.rms_breaking]
                + [out.rms(out.power[c]) if c in out.power else None for c in channels]
                + [out.rms(out.unresolved)]
            )
    return (
        "RMS amplitude of the symmetry breaking in each O(3) channel (lambda, parity);\n"
        "energy in eV, forces in eV/A (RMS per component over atoms and x, y, z, as in check), "
        "stress in eV/A^3 (Frobenius)\n" + format_table(headers, rows)
    )


def plot_spectra(spectra: List[StructureSpectrum], path: str) -> None:
    """PNG: RMS amplitude against lambda (log scale), one panel per output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for spectrum in spectra:
        names += [n for n in spectrum.outputs if n not in names]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for spectrum in spectra:
            out = spectrum.outputs.get(name)
            if out is None:
                continue
            for sigma, marker, style in ((1, "o", "-"), (-1, "s", "--")):
                ls = [l for l in range(spectrum.lmax + 1) if (l, sigma) in out.power and (l, sigma) != (0, 1)]
                amps = [max(out.rms(out.power[(l, sigma)]), 1e-300) for l in ls]
                if ls:
                    ax.semilogy(ls, amps, marker=marker, linestyle=style, label=f"{spectrum.label} {'+' if sigma > 0 else '-'}")
        ax.set_xticks(range(max(s.lmax for s in spectra) + 1))
        ax.set_xlabel("lambda")
        ax.set_ylabel(f"RMS breaking ({'eV' if name == 'energy' else 'eV/A per component' if 'forces' in name else 'eV/A^3'})")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    from ase_symdiag.report import atomic_savefig

    atomic_savefig(fig, path)
    plt.close(fig)


def structure_spectrum(
    handle,
    structure,
    lmax: int = 4,
    *,
    quadrature: Optional[O3Quadrature] = None,
    direct: bool = True,
    batch_size: int = 16,
    progress=None,
) -> Tuple[StructureSpectrum, "object"]:
    """Evaluate ``structure`` on a quadrature exact to ``2 lmax`` and decompose every output.

    Returns the spectrum and the :class:`~ase_symdiag.metrics.symmetrize.SymmetrizedPrediction`
    it was computed from (its mean is the symmetrized prediction on that quadrature).
    """
    from ase_symdiag.o3.quadrature import smallest_exact_quadrature
    from ase_symdiag.metrics.symmetrize import symmetrized_prediction

    if quadrature is None:
        quadrature = smallest_exact_quadrature(2 * lmax)
    elif quadrature.degree < 2 * lmax:
        raise ValueError(
            f"quadrature '{quadrature.name}' is exact to degree {quadrature.degree}, the "
            f"spectrum up to lambda={lmax} needs {2 * lmax}"
        )
    prediction = symmetrized_prediction(
        handle, structure, quadrature, energies=False, direct=direct, batch_size=batch_size, progress=progress
    )
    from ase.data import chemical_symbols

    symbols = [chemical_symbols[z] for z in structure.numbers]
    outputs = {
        name: output_spectrum(name, values, quadrature, lmax, symbols=symbols)
        for name, values in prediction.samples.items()
    }
    spectrum = StructureSpectrum(
        label=structure.label, n_atoms=len(structure), lmax=lmax, quadrature=quadrature.name, outputs=outputs
    )
    return spectrum, prediction
