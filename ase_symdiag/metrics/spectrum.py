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
quadrature is exact to degree ``2 lambda_max`` and g is band-limited (docs/methods.md
§3). A quadrature only sees g at its own operations, so the variance *over
the quadrature* can miss breaking it cannot resolve (the two operations of ``Ci``
see nothing of a lambda = 2 term). The part of the breaking not attributed to the
channels ``lambda <= lambda_max``, ``unresolved``, is therefore measured at
independent Haar-random check orientations R_j (:func:`ase_symdiag.drivers.spectrum.structure_spectrum`, 32 by
default): ``unresolved`` is the sample variance over the R_j (unbiased, ddof = 1) of
``h = g - g_fit``, with ``g_fit`` the channel expansion up to ``lambda_max`` fitted on
the quadrature. It is an unbiased estimate of the O(3) variance of h: the power above
``lambda_max`` (plus any aliasing of the fitted breaking channels), exactly
round-off for a g band-limited to ``lambda_max``, and comes with its standard error
``unresolved_stderr``; ``variance`` is then the resolved breaking plus ``unresolved``.
Without check orientations (e.g. the point-cloud spectra), ``unresolved`` is the
variance over the quadrature minus the resolved channels, which is blind to what the
quadrature cannot see.

Parity convention: sigma is the sign of the channel's basis functions under the
inversion itself, so a polar vector sits in (1, -) and a pseudoscalar in (0, -).
``metatomic.torch.o3`` labels channels relative to the natural parity (-1)^lambda
instead: its ``chi_sigma`` is our sigma times (-1)^lambda.

Units (one definition, used in every header and JSON ``unit``): energy power in
eV^2; forces in (eV/Å)^2 per atom, summed over x, y, z (mean over atoms; 3x the
per-component mean square); stress in (eV/Å^3)^2 summed over the 9 entries
(Frobenius). RMS *amplitudes* (tables, plots,
``rms_breaking``) divide a per-atom vector's power by its ``components`` (3): the
force breaking is the RMS per component over atoms and x, y, z, in eV/Å, the one
normalisation of ``ase-symdiag check`` and of the adaptive choice's residual.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ase_symdiag.errors import UsageError
from ase_symdiag.o3.irreps import Channel, channel_average, channel_basis
from ase_symdiag.o3.quadrature import O3Quadrature

#: units of the powers, by output name (see the module docstring)
POWER_UNITS = {
    "energy": "eV^2",
    "energies": "eV^2 per atom",
    "forces": "(eV/A)^2 per atom, summed over x,y,z",
    "direct_forces": "(eV/A)^2 per atom, summed over x,y,z",
    "stress": "(eV/A^3)^2, summed over the 9 entries",
    "direct_stress": "(eV/A^3)^2, summed over the 9 entries",
}

#: Haar-random check orientations per structure used to measure ``unresolved``
N_CHECK = 32


def channel_projections(values: np.ndarray, quadrature: O3Quadrature, lmax: int) -> Dict[Channel, np.ndarray]:
    """``P^{l,sigma}_{ab} = sum_k w_k D^{l,sigma}_{ab}(R_k) g(R_k)`` for every component of ``values`` (K, ...).

    Returns ``{(l, sigma): (2l+1, 2l+1, M)}`` with M the number of components; the
    expansion coefficients are ``(2l+1) P`` and the channel power ``(2l+1) |P|^2``.
    Channels with sigma = -1 are only present when the quadrature contains improper
    operations.
    """
    K = values.shape[0]
    flat = values.reshape(K, -1)
    weights = quadrature.weights
    sigmas = (1, -1) if quadrature.include_inversion else (1,)
    out: Dict[Channel, np.ndarray] = {}
    for l in range(lmax + 1):
        for sigma in sigmas:
            basis = channel_basis(l, sigma, quadrature.rotations)
            out[(l, sigma)] = np.einsum("k,kab,km->abm", weights, basis, flat)
    return out


def channel_powers(values: np.ndarray, quadrature: O3Quadrature, lmax: int) -> Dict[Channel, np.ndarray]:
    """Power of each component of ``values`` (K, ...) in every channel (l <= lmax, sigma).

    Returns ``{(l, sigma): array of shape values.shape[1:]}``. Channels with sigma = -1
    are only present when the quadrature contains improper operations.
    """
    return {
        (l, sigma): ((2 * l + 1) * np.sum(projection**2, axis=(0, 1))).reshape(values.shape[1:])
        for (l, sigma), projection in channel_projections(values, quadrature, lmax).items()
    }


def channel_fit(projections: Dict[Channel, np.ndarray], rotations: np.ndarray) -> np.ndarray:
    """The channel expansion ``sum_{l,sigma} (2l+1) sum_ab P_ab D^{l,sigma}_ab(R)`` at ``rotations`` (J, M)."""
    rotations = np.asarray(rotations, dtype=np.float64)
    out = None
    for (l, sigma), projection in projections.items():
        term = (2 * l + 1) * np.einsum("jab,abm->jm", channel_basis(l, sigma, rotations), projection)
        out = term if out is None else out + term
    return out


@dataclass
class OutputSpectrum:
    """Spectrum of one output of one structure (see module docstring for units)."""

    output: str
    unit: str
    mean_square: float  # <|g|^2>
    variance: float  # <|g - <g>|^2>, the total symmetry breaking
    power: Dict[Channel, float]  # resolved channels, (0, +) included
    unresolved: float  # breaking not attributed to the resolved channels (module docstring)
    per_element: Dict[str, Dict[Channel, float]] = field(default_factory=dict)
    components: int = 1  # entries summed per item in the powers (3 for forces)
    unresolved_stderr: float = 0.0  # standard error of ``unresolved`` (0 without check orientations)
    n_check: int = 0  # Haar-random check orientations ``unresolved`` was measured at
    per_item: bool = False  # powers are means over items (atoms, points) of sums over components
    #: ``P^{l,sigma}`` of :func:`channel_projections`, (2l+1, 2l+1, *sample shape), for averages
    projections: Dict[Channel, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def unresolved_bound(self) -> float:
        """``unresolved`` plus two standard errors: what a verdict counts against a tolerance."""
        return self.unresolved + 2.0 * self.unresolved_stderr

    def averaged_power(self, quadrature: O3Quadrature) -> float:
        """Breaking power of the *resolved* channels left after averaging over ``quadrature``.

        The average over {(R_k, w_k)} of the model turns the back-rotated ``g(R)`` into
        ``g_bar(R) = sum_k w_k g(R_k R)``, whose channel coefficients are ``A^T P`` with
        ``A = sum_k w_k D^{l,sigma}(R_k)``; this returns ``sum (2l+1) |A^T P|^2`` over the
        breaking channels (reduced like the powers). It is exact (a variance over O(3),
        i.e. a mean square over orientations, not a maximum) for the channels
        ``<= lmax``; what lies above them is :attr:`unresolved`.
        """
        if not self.projections:
            raise UsageError(f"{self.output}: the spectrum kept no channel projections")
        if quadrature.include_inversion and (0, -1) not in self.projections:
            raise UsageError(
                f"{self.output}: the spectrum was measured on proper rotations only; it cannot "
                f"predict an average over '{quadrature.name}', which has improper operations"
            )
        total = None
        for (l, sigma), projection in self.projections.items():
            if (l, sigma) == (0, 1):
                continue
            A = channel_average(l, sigma, quadrature.rotations, quadrature.weights)
            left = (2 * l + 1) * np.sum(np.einsum("ae,ab...->eb...", A, projection) ** 2, axis=(0, 1))
            total = left if total is None else total + left
        return 0.0 if total is None else _reduce(total, self.per_item)

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

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "unit": self.unit,
            "mean_square": self.mean_square,
            "variance": self.variance,
            "unresolved": self.unresolved,
            "unresolved_stderr": self.unresolved_stderr,
            "unresolved_definition": (
                f"breaking not attributed to the channels <= lmax: variance over {self.n_check} Haar-random "
                "check orientations of g minus its channel fit (counts against tolerances)"
                if self.n_check else "variance over the quadrature minus the resolved channels"
            ),
            "components": self.components,
            "rms_breaking": self.rms_breaking,
            "rms_breaking_definition": (
                f"sqrt(variance / {self.components}): RMS per component over items and components"
                if self.components > 1 else "sqrt(variance)"
            ),
            "power": {channel_key(c): p for c, p in self.power.items()},
            "per_element": {el: {channel_key(c): p for c, p in v.items()} for el, v in self.per_element.items()},
        }


def channel_key(channel: Channel) -> str:
    """How reports name a channel ``(lambda, parity)``: ``"1+"``, ``"2-"``."""
    l, s = channel
    return f"{l}{'+' if s > 0 else '-'}"


def _reduce(array: np.ndarray, per_item: bool, mask=None) -> float:
    """Per-item arrays (N[, ...]): mean over items of the sum over components; else the sum."""
    if per_item:
        per = array.reshape(array.shape[0], -1).sum(axis=1) if array.ndim > 1 else array
        return float(per[mask].mean() if mask is not None else per.mean())
    return float(np.sum(array))


def output_spectrum(
    name: str,
    samples: np.ndarray,
    quadrature: O3Quadrature,
    lmax: int,
    *,
    symbols: Optional[List[str]] = None,
    per_item: Optional[bool] = None,
    unit: Optional[str] = None,
    check: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> OutputSpectrum:
    """Spectrum of back-rotated ``samples`` (K, ...) of one output.

    Per-item outputs (K, N[, ...]) (per atom or per point; by default the atomistic
    ``forces``, ``direct_forces`` and ``energies``) are summed over components and
    averaged over items (and per element when ``symbols`` is given); other outputs
    are summed over components. ``unit`` defaults to the atomistic output's.
    ``check``: ``(rotations (J, 3, 3), samples (J, ...))``, the back-rotated output at
    Haar-random orientations; ``unresolved`` is then measured there (module docstring).
    """
    per_atom = name in ("forces", "direct_forces", "energies") if per_item is None else bool(per_item)
    projections = channel_projections(samples, quadrature, lmax)
    powers = {
        c: ((2 * c[0] + 1) * np.sum(p**2, axis=(0, 1))).reshape(samples.shape[1:]) for c, p in projections.items()
    }
    weights = quadrature.weights.reshape((-1,) + (1,) * (samples.ndim - 1))
    square = np.sum(weights * samples**2, axis=0)
    mean = np.sum(weights * samples, axis=0)
    variance = np.clip(np.sum(weights * (samples - mean) ** 2, axis=0), 0.0, None)

    def reduce(array: np.ndarray, mask=None) -> float:
        return _reduce(array, per_atom, mask)

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
    stderr, n_check = 0.0, 0
    if check is not None:
        check_rotations, check_samples = np.asarray(check[0], dtype=np.float64), np.asarray(check[1])
        if check_samples.shape[1:] != samples.shape[1:] or len(check_samples) != len(check_rotations):
            raise UsageError(f"{name}: check samples {check_samples.shape} do not match {samples.shape[1:]}")
        if not quadrature.include_inversion and np.any(np.linalg.det(check_rotations) < 0):
            raise UsageError(f"{name}: improper check orientations need a quadrature with improper operations")
        n_check = len(check_rotations)
        fit = channel_fit(projections, check_rotations).reshape(check_samples.shape)
        misfit = check_samples - fit  # (J, ...)
        # a constant misfit (an aliased (0, +) mean) is not orientation dependence: the
        # sample variance over the check orientations, unbiased (ddof=1)
        spread = np.array([reduce(d**2) for d in misfit - misfit.mean(axis=0)]) * n_check / (n_check - 1)
        unresolved = float(spread.mean())
        stderr = float(spread.std(ddof=1) / np.sqrt(n_check))
        total_variance = resolved + unresolved
        square = power[(0, 1)] + total_variance  # Parseval: the O(3) mean square
    return OutputSpectrum(
        output=name,
        unit=POWER_UNITS.get(name, "") if unit is None else unit,
        mean_square=square if check is not None else reduce(square),
        variance=total_variance,
        power=power,
        unresolved=max(unresolved, 0.0),
        per_element=per_element,
        components=int(np.prod(samples.shape[2:])) if per_atom and samples.ndim > 2 else 1,
        unresolved_stderr=stderr,
        n_check=n_check,
        per_item=per_atom,
        projections={c: p.reshape(p.shape[:2] + samples.shape[1:]) for c, p in projections.items()},
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
    headers = ["structure", "output", "rms breaking"] + [channel_key(c) for c in channels] + [f">{lmax}"]
    rows = []
    for spectrum in spectra:
        for name, out in spectrum.outputs.items():
            rows.append(
                [spectrum.label, name, out.rms_breaking]
                + [out.rms(out.power[c]) if c in out.power else None for c in channels]
                + [out.rms(out.unresolved)]
            )
    n_check = max((o.n_check for s in spectra for o in s.outputs.values()), default=0)
    where = (
        f"measured at {n_check} Haar-random check orientations" if n_check
        else "variance over the quadrature minus the channels"
    )
    return (
        "RMS amplitude of the symmetry breaking in each O(3) channel (lambda, parity);\n"
        "energy in eV, forces in eV/A (RMS per component over atoms and x, y, z, as in check), "
        "stress in eV/A^3 (Frobenius)\n"
        f"'>{lmax}': breaking NOT attributed to channels lambda <= {lmax} (unresolved, {where}); "
        "it is part of 'rms breaking' and counts against symmetrize's tolerances\n" + format_table(headers, rows)
    )


def spectrum_quadrature(lmax: int, quadrature: Optional[O3Quadrature] = None) -> O3Quadrature:
    """``quadrature``, checked to be exact to ``2 lmax``, or the smallest such one."""
    from ase_symdiag.o3.quadrature import smallest_exact_quadrature

    if quadrature is None:
        return smallest_exact_quadrature(2 * lmax)
    if quadrature.degree < 2 * lmax:
        raise UsageError(
            f"quadrature '{quadrature.name}' is exact to degree {quadrature.degree}, the "
            f"spectrum up to lambda={lmax} needs {2 * lmax}"
        )
    return quadrature


def spectrum_from_samples(structure, prediction, lmax: int, checks: Optional[Dict[str, tuple]] = None) -> StructureSpectrum:
    """The :class:`StructureSpectrum` of ``structure`` from its back-rotated samples on
    a quadrature (``prediction``, a ``SymmetrizedPrediction`` kept with its samples)
    and, per output, the ``(rotations, back-rotated values)`` at check orientations
    (``checks``; absent: ``unresolved`` from the quadrature alone)."""
    from ase.data import chemical_symbols

    checks = checks or {}
    quadrature = prediction.quadrature
    symbols = [chemical_symbols[z] for z in structure.numbers]
    outputs = {
        name: output_spectrum(name, values, quadrature, lmax, symbols=symbols, check=checks.get(name))
        for name, values in prediction.samples.items()
    }
    return StructureSpectrum(
        label=structure.label, n_atoms=len(structure), lmax=lmax, quadrature=quadrature.name, outputs=outputs
    )
