"""Minimal-bias corrections: exact physical constraints at (almost) no cost.

Each correction is a small object with a ``name`` and

    ``correction(outputs, structure, masses=None) -> outputs``

acting on the numpy outputs of ONE structure: a dict with ``energy`` (float, eV),
``forces`` ((N, 3) eV/Å or None), ``stress`` ((3, 3) eV/Å^3 or None) and
``energies`` ((N,) eV or None); ``masses`` ((N,) amu) is only used where stated. A
correction returns a new dict with new arrays and never modifies its input.

Output post-processors (no extra model evaluation):

- :class:`NetForce`: zero net force (translational invariance).
- :class:`NetTorque`: zero net torque for finite (non-periodic) structures.
- :class:`SymmetricStress`: symmetric stress tensor.
- :class:`PointGroupAverage`: outputs exactly invariant under a crystal's space group.

Corrections that change what the model is asked (the calculator does this part):

- :class:`StochasticRotation`: one Haar-random O(3) operation per call; declares
  ``rotations(structure) -> (rotations (K, 3, 3), weights (K,))``.
- :class:`MixedForces`: direct forces plus a conservative correction refreshed every
  n-th call; declares ``evaluation_options(options, structure) -> options``.

:class:`~ase_symdiag.calculator.SymDiagCalculator` takes ``corrections=[...]`` (objects
or the names in :data:`NAMES`, see :func:`resolve_corrections`) and applies them, in
the given order, after evaluation and rotational averaging and before the results are
written (stress as 3x3, before Voigt). Conventions: ``x' = x R^T``; forces are rows.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ase_symdiag.structures import Structure

__all__ = [
    "NAMES",
    "Correction",
    "MixedForces",
    "NetForce",
    "NetTorque",
    "PointGroupAverage",
    "StochasticRotation",
    "SymmetricStress",
    "apply_corrections",
    "net_force",
    "net_torque",
    "resolve_corrections",
    "space_group_operations",
]

Outputs = Dict[str, object]


def _copy(outputs: Outputs) -> Outputs:
    """A shallow dict copy whose arrays are fresh copies (corrections stay pure)."""
    return {k: (np.array(v, dtype=np.float64, copy=True) if isinstance(v, np.ndarray) else v) for k, v in outputs.items()}


def _weights(kind: str, masses: Optional[np.ndarray], n: int, name: str) -> np.ndarray:
    if kind == "uniform":
        return np.ones(n)
    if masses is None:
        raise ValueError(f"{name}(weighting='mass') needs the atomic masses")
    masses = np.asarray(masses, dtype=np.float64)
    if masses.shape != (n,) or not np.all(masses > 0):
        raise ValueError(f"{name}: masses must be {n} positive numbers, got shape {masses.shape}")
    return masses


def _check_weighting(weighting: str, name: str) -> str:
    if weighting not in ("uniform", "mass"):
        raise ValueError(f"{name}: weighting must be 'uniform' or 'mass', got {weighting!r}")
    return weighting


# --------------------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------------------


def net_force(forces: np.ndarray) -> np.ndarray:
    """``sum_i F_i`` (3,), eV/Å."""
    return np.asarray(forces, dtype=np.float64).sum(axis=0)


def net_torque(forces: np.ndarray, positions: np.ndarray, centre: Optional[np.ndarray] = None) -> np.ndarray:
    """``sum_i (r_i - c) x F_i`` (3,), eV; ``c`` defaults to the centroid.

    The torque is independent of ``c`` only when the net force is zero.
    """
    positions = np.asarray(positions, dtype=np.float64)
    c = positions.mean(axis=0) if centre is None else np.asarray(centre, dtype=np.float64)
    return np.cross(positions - c, np.asarray(forces, dtype=np.float64)).sum(axis=0)


# --------------------------------------------------------------------------------------
# post-processors
# --------------------------------------------------------------------------------------


class Correction:
    """Base class: ``name`` and a pure ``__call__(outputs, structure, masses=None)``."""

    name = "correction"

    def __call__(self, outputs: Outputs, structure: Structure, masses: Optional[np.ndarray] = None) -> Outputs:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NetForce(Correction):
    """Zero net force: ``F_i <- F_i - a_i sum_j F_j`` (translational invariance).

    Makes exact: ``sum_i F_i = 0`` (to round-off), for every structure, periodic or
    not, so MD conserves the total momentum. ``weighting="uniform"`` (default) takes
    ``a_i = 1/N`` (subtract the mean force: the smallest change in the Euclidean norm);
    ``weighting="mass"`` takes ``a_i = m_i / M`` (remove the centre-of-mass
    acceleration: the smallest change of the accelerations in the kinetic metric).
    Energy, stress and per-atom energies are untouched.
    """

    name = "net_force"

    def __init__(self, weighting: str = "uniform") -> None:
        self.weighting = _check_weighting(weighting, "NetForce")

    def __call__(self, outputs, structure, masses=None):
        out = _copy(outputs)
        forces = out.get("forces")
        if forces is None:
            return out
        a = _weights(self.weighting, masses, len(forces), "NetForce")
        out["forces"] = forces - np.outer(a / a.sum(), forces.sum(axis=0))
        return out

    def __repr__(self) -> str:
        return f"NetForce(weighting={self.weighting!r})"


class NetTorque(Correction):
    """Zero net torque for finite structures: ``F_i <- F_i - a_i w x r_i'``.

    With weights ``a_i`` (1, or the masses for ``weighting="mass"``), the centre
    ``c = sum a_i r_i / sum a_i`` (centroid, or centre of mass), ``r_i' = r_i - c``,
    ``tau = sum r_i' x F_i`` and ``I = sum a_i (|r_i'|^2 1 - r_i' r_i'^T)``, it solves
    ``I w = tau`` (least squares, minimum norm, for linear molecules and single atoms,
    where the torque along the axis vanishes anyway) and subtracts the rigid-rotation
    field. Since ``sum a_i r_i' x (w x r_i') = I w``, the corrected torque is exactly
    zero, and since ``sum a_i w x r_i' = w x sum a_i r_i' = 0`` the correction adds no
    net force.

    Makes exact: ``sum_i (r_i - c) x F_i = 0``; together with :class:`NetForce` (zero
    net force, so the torque is the same about every point) the total angular
    momentum is conserved in MD (velocity Verlet conserves it exactly for such forces).
    Energy, stress and per-atom energies are untouched.

    Periodic structures (any periodic direction): no-op. Angular momentum is not a
    conserved quantity under periodic boundary conditions, and the rigid-rotation
    field ``w x r'`` is not periodic.

    Order: apply after :class:`NetForce`. The torque of a net force ``f`` spread as
    ``b_i f`` about ``c`` is ``(sum b_i r_i') x f``: it vanishes when both corrections
    use the same weights (both uniform: the centroid; both mass: the centre of mass),
    and then the two commute. With mismatched weights (e.g. uniform NetForce, mass
    NetTorque) NetForce applied *after* NetTorque puts a torque back, while NetTorque
    applied last never re-creates a net force: ``[NetForce(), NetTorque()]`` is exact
    for every choice.
    """

    name = "net_torque"

    def __init__(self, weighting: str = "uniform") -> None:
        self.weighting = _check_weighting(weighting, "NetTorque")

    def __call__(self, outputs, structure, masses=None):
        out = _copy(outputs)
        forces = out.get("forces")
        if forces is None or bool(np.any(structure.pbc)):
            return out
        a = _weights(self.weighting, masses, len(forces), "NetTorque")
        positions = np.asarray(structure.positions, dtype=np.float64)
        centre = (a[:, None] * positions).sum(axis=0) / a.sum()
        r = positions - centre
        tau = np.cross(r, forces).sum(axis=0)
        inertia = (a * np.einsum("ij,ij->i", r, r)).sum() * np.eye(3) - np.einsum("i,ij,ik->jk", a, r, r)
        w = np.linalg.lstsq(inertia, tau, rcond=None)[0]
        out["forces"] = forces - a[:, None] * np.cross(w, r)
        return out

    def __repr__(self) -> str:
        return f"NetTorque(weighting={self.weighting!r})"


class SymmetricStress(Correction):
    """Symmetric stress: ``S <- (S + S^T) / 2``.

    Makes exact: ``S = S^T`` (to round-off), i.e. zero internal torque density (the
    antisymmetric part of the stress of a rotation-invariant energy vanishes). Note
    that the calculator's Voigt output already averages each off-diagonal pair, so
    this changes the 3x3 tensor the other corrections and users of
    :func:`apply_corrections` see, not ``results["stress"]``. Other outputs untouched.
    """

    name = "symmetric_stress"

    def __call__(self, outputs, structure, masses=None):
        out = _copy(outputs)
        stress = out.get("stress")
        if stress is not None:
            out["stress"] = 0.5 * (stress + stress.T)
        return out


def space_group_operations(
    structure: Structure, symprec: float = 1e-5, angle_tolerance: float = -1.0
) -> Tuple[np.ndarray, np.ndarray]:
    """Space-group operations of a periodic structure as ``(Q (G, 3, 3), perm (G, N))``.

    ``Q_g = A R_g A^-1`` (``A = cell^T``, ``R_g`` spglib's integer rotation in
    fractional coordinates) is the Cartesian rotation: the operation maps atom ``i``
    to ``r_i Q_g^T + t_g``, which is atom ``perm[g, i]`` up to a lattice vector. All
    operations spglib returns are kept, pure translations of supercells included, so
    the set is a group (closed under composition) and averaging over it is an exact
    projector. Raises ``ValueError`` for non-periodic structures and when an image
    matches no atom of the same species within ``10 * symprec`` Å.
    """
    import spglib
    from scipy.spatial import cKDTree

    if not structure.periodic:
        raise ValueError("space-group operations need a structure periodic in all directions")
    cell = np.asarray(structure.cell, dtype=np.float64)
    frac = np.asarray(structure.positions, dtype=np.float64) @ np.linalg.inv(cell)
    frac = _wrap(frac)
    numbers = np.asarray(structure.numbers)
    try:
        data = spglib.get_symmetry_dataset(
            (cell, frac, numbers), symprec=symprec, angle_tolerance=angle_tolerance, _throw=True
        )
    except TypeError:  # spglib < 2.5 has no _throw
        data = spglib.get_symmetry_dataset((cell, frac, numbers), symprec=symprec, angle_tolerance=angle_tolerance)
    if data is None:  # pragma: no cover - spglib failed without raising
        return np.eye(3)[None], np.arange(len(numbers))[None]
    rotations = np.asarray(data.rotations if hasattr(data, "rotations") else data["rotations"], dtype=np.float64)
    translations = np.asarray(data.translations if hasattr(data, "translations") else data["translations"])
    a = cell.T
    q = a @ rotations @ np.linalg.inv(a)
    tree = cKDTree(frac, boxsize=1.0)
    images = _wrap(np.einsum("gij,nj->gni", rotations, frac) + translations[:, None, :])
    _, index = tree.query(images.reshape(-1, 3))
    perm = index.reshape(len(rotations), len(numbers))
    diff = images - frac[perm]
    diff -= np.round(diff)
    error = np.linalg.norm(diff @ cell, axis=-1)
    tol = 10.0 * symprec
    if error.max() > tol or np.any(numbers[perm] != numbers[None]):
        raise ValueError(
            f"space-group images do not match the atoms (max distance {error.max():.3g} Å > {tol:g} Å "
            "or species differ): increase symprec or symmetrize the structure"
        )
    if any(len(np.unique(p)) != len(numbers) for p in perm):
        raise ValueError("a space-group operation does not permute the atoms: increase symprec")
    return q, perm


def _wrap(frac: np.ndarray) -> np.ndarray:
    frac = np.mod(frac, 1.0)
    frac[frac >= 1.0] = 0.0  # np.mod(-1e-17, 1) == 1.0
    return frac


class PointGroupAverage(Correction):
    """Crystal symmetry: average the outputs over the space group found by spglib.

    With the operations ``(Q_g, pi_g)`` of :func:`space_group_operations` (atom ``i``
    is mapped onto atom ``pi_g(i)``), an output is equivariant under ``g`` when
    ``F_{pi_g(i)} = F_i Q_g^T`` (rows) and ``S = Q_g S Q_g^T``. The projector

        ``F_i <- (1/|G|) sum_g F_{pi_g(i)} Q_g``  (``P_g^T F Q_g`` with ``P[pi(i), i] = 1``)
        ``S <- (1/|G|) sum_g Q_g^T S Q_g``,  ``e_i <- (1/|G|) sum_g e_{pi_g(i)}``

    makes the outputs exactly invariant (to round-off) under every operation of the
    group; energy is a scalar and unchanged. One model evaluation: this is an output
    projector, not an average over rotated inputs. It removes the breaking that is
    incompatible with the crystal's symmetry (e.g. forces on atoms at inversion
    centres, anisotropic stress of a cubic crystal), not the rest.

    Non-periodic structures: no-op. The structure must be symmetric within ``symprec``
    (Å); for a symmetry found only within ``symprec`` the result is exactly invariant
    under the operations ``Q_g = A R_g A^-1`` of the actual lattice, which are
    orthogonal to that precision. spglib runs at every call (milliseconds).

    Compared with metatomic-ase's ``_get_group_operations``/``_average_over_group``
    (same formulas): those keep one operation per distinct rotation, which in a
    supercell drops the pure translations and the chosen set is not a group, so the
    average is exactly invariant only if the raw outputs are already invariant under
    the lattice translations; they match with a fixed 1e-6 fractional tolerance
    regardless of ``symprec``, build dense N x N permutation matrices with a Python
    loop over atoms, ignore per-atom energies, and are private API.
    """

    name = "point_group"

    def __init__(self, symprec: float = 1e-5, angle_tolerance: float = -1.0) -> None:
        self.symprec = float(symprec)
        self.angle_tolerance = float(angle_tolerance)

    def __call__(self, outputs, structure, masses=None):
        out = _copy(outputs)
        if not structure.periodic:
            return out
        q, perm = space_group_operations(structure, self.symprec, self.angle_tolerance)
        n_ops = len(q)
        forces = out.get("forces")
        if forces is not None:
            out["forces"] = np.einsum("gij,gjk->ik", forces[perm], q) / n_ops
        stress = out.get("stress")
        if stress is not None:
            out["stress"] = np.einsum("gji,jk,gkl->il", q, stress, q) / n_ops
        energies = out.get("energies")
        if energies is not None:
            out["energies"] = energies[perm].mean(axis=0)
        return out

    def __repr__(self) -> str:
        return f"PointGroupAverage(symprec={self.symprec:g})"


# --------------------------------------------------------------------------------------
# corrections that change the evaluation
# --------------------------------------------------------------------------------------


class StochasticRotation(Correction):
    """One fresh Haar-random O(3) operation ``R`` per calculation (1 evaluation).

    The calculator evaluates the model on ``x R^T`` and back-rotates (``E(Rx)``,
    ``F(Rx) R``, ``R^T S(Rx) R``). Since ``R`` is Haar-distributed, the expectation of
    every output is the exact Haar average (the fully symmetrized prediction): the
    estimator is unbiased for every breaking degree. Each call has an error
    ``g(R) - <g>`` of zero mean and root-mean-square equal to the rotational standard
    deviation (``results["forces_std"]`` of a symmetrized calculator); consecutive
    calls are independent, so in MD it acts as an uncorrelated random force (no
    systematic drift of the angular momentum, but a random walk of it and of the total
    energy, since each step's forces are the gradient of a different energy).
    ``improper=False`` samples SO(3) only (keeps chirality-odd breaking).

    With ``symmetrize=`` the whole quadrature is rotated by the same random ``R``
    (operations ``Q_k R``): still unbiased, with the quadrature's lower variance.
    ASE caches results per geometry: a new ``R`` is drawn at each new calculation.
    Stateful (its random generator advances); ``__call__`` is a pass-through.
    """

    name = "stochastic"

    def __init__(self, seed: Optional[int] = None, improper: bool = True) -> None:
        self.seed = seed
        self.improper = bool(improper)
        self._rng = np.random.default_rng(seed)

    def rotations(self, structure: Structure) -> Tuple[np.ndarray, np.ndarray]:
        """``((1, 3, 3), (1,))``: a Haar-random O(3) (or SO(3)) operation, weight 1."""
        z = self._rng.standard_normal((3, 3))
        q, r = np.linalg.qr(z)
        q = q * np.sign(np.diag(r))[None, :]  # Haar on O(3) (Mezzadri 2007)
        if not self.improper and np.linalg.det(q) < 0:
            q = -q
        return q[None], np.ones(1)

    def __call__(self, outputs, structure, masses=None):
        return _copy(outputs)

    def __repr__(self) -> str:
        return f"StochasticRotation(seed={self.seed!r}, improper={self.improper})"


class MixedForces(Correction):
    """Direct forces with a conservative correction refreshed every ``every`` calls.

    For models with both a direct force head and an energy, used with
    ``non_conservative=True`` or ``"forces"``. On call ``k`` (counting calculations,
    0-based): if ``k % every == 0`` the calculator also computes the conservative
    forces by autograd, the correction stores ``delta = F_cons - F_direct`` and returns
    ``F_cons``; otherwise it returns ``F_direct + delta`` with the stored ``delta``
    (the "multiple time step" scheme users run: cheap direct forces at every step,
    backward pass every n-th step). ``every=1`` gives the conservative forces.

    Makes exact: nothing, between refreshes. The returned forces equal ``F_cons`` only
    on refresh calls; in between, the error is ``delta`` drift, i.e. the change of
    ``F_cons - F_direct`` since the last refresh, which grows with ``every * dt``. The
    held-difference scheme is not the impulse (RESPA) form, is not time-reversible and
    does not conserve energy exactly; it removes the *systematic* non-conservative
    part of the direct forces only to the extent that ``delta`` varies slowly. The
    energy and stress are not modified. Stateful; a change in the number of atoms
    forces a refresh (the counter is not reset).
    """

    name = "mixed_forces"

    def __init__(self, every: int = 10) -> None:
        if int(every) < 1:
            raise ValueError(f"MixedForces: every must be >= 1, got {every}")
        self.every = int(every)
        self.calls = 0
        self._delta: Optional[np.ndarray] = None
        self._refresh = True

    def evaluation_options(self, options: dict, structure: Optional[Structure] = None) -> dict:
        """Ask for conservative forces on refresh calls (also advances the counter)."""
        if options.get("forces", True) or not options.get("direct", False):
            raise ValueError("MixedForces needs a calculator with non_conservative=True or 'forces'")
        stale = self._delta is None or (structure is not None and len(self._delta) != len(structure))
        self._refresh = self.calls % self.every == 0 or stale
        self.calls += 1
        return dict(options, forces=True) if self._refresh else dict(options)

    def __call__(self, outputs, structure, masses=None):
        out = _copy(outputs)
        direct = out.get("forces")
        conservative = out.pop("conservative_forces", None)
        if direct is None:
            return out
        if conservative is not None:
            self._delta = conservative - direct
            out["forces"] = conservative
        elif self._delta is not None and self._delta.shape == direct.shape:
            out["forces"] = direct + self._delta
        else:  # called without the calculator's cooperation, or the atoms changed
            self._delta = None
        return out

    def __repr__(self) -> str:
        return f"MixedForces(every={self.every})"


# --------------------------------------------------------------------------------------
# resolution and the calculator hooks
# --------------------------------------------------------------------------------------

#: names accepted by :func:`resolve_corrections` (``"stochastic:SEED"`` and
#: ``"mixed_forces:N"`` take an integer argument)
NAMES = {
    "net_force": NetForce,
    "net_torque": NetTorque,
    "symmetric_stress": SymmetricStress,
    "point_group": PointGroupAverage,
    "stochastic": StochasticRotation,
    "mixed_forces": MixedForces,
}


def resolve_corrections(spec) -> List[Correction]:
    """Turn ``corrections=`` into a list of correction objects.

    ``None``/empty: no corrections. A string or a correction, or a sequence of them.
    Strings are names of :data:`NAMES`, optionally with an integer argument after a
    colon (``"stochastic:7"`` seeds the generator, ``"mixed_forces:5"``) or several
    names separated by commas (``"net_force,net_torque"``). At most one correction may
    declare ``rotations``.
    """
    if spec is None:
        return []
    if isinstance(spec, str) or callable(spec):
        spec = [spec]
    out: List[Correction] = []
    for item in spec:
        if isinstance(item, str):
            for text in filter(None, (part.strip() for part in item.split(","))):
                out.append(_from_name(text))
        elif isinstance(item, type) and issubclass(item, Correction):
            out.append(item())
        elif callable(item):
            out.append(item)
        else:
            raise ValueError(f"a correction must be a name or a callable, got {item!r}")
    if sum(hasattr(c, "rotations") for c in out) > 1:
        raise ValueError("at most one correction may choose the rotations (e.g. one 'stochastic')")
    return out


def _from_name(text: str) -> Correction:
    name, _, argument = text.partition(":")
    if name not in NAMES:
        raise ValueError(f"unknown correction {text!r}: use one of {sorted(NAMES)}")
    if not argument:
        return NAMES[name]()
    if name not in ("stochastic", "mixed_forces") or not argument.lstrip("-").isdigit():
        raise ValueError(f"correction {text!r}: only 'stochastic:SEED' and 'mixed_forces:N' take an integer")
    return NAMES[name](int(argument))


def apply_corrections(corrections: Sequence, outputs: Outputs, structure: Structure, masses=None) -> Outputs:
    """Apply ``corrections`` (resolved first) in order to one structure's ``outputs``."""
    out = _copy(outputs)
    for correction in resolve_corrections(corrections):
        out = correction(out, structure, masses)
    return out


def prepare_evaluation(corrections: Sequence, structure: Structure, quadrature, options: dict):
    """Calculator hook before evaluation: ``(quadrature or None, own, options)``.

    A correction with ``rotations`` turns the identity into its operations, or rotates
    an existing quadrature (operations ``Q_k R_j``, weights ``w_k v_j``); ``own`` is
    True when the operations come only from the correction (its spread is then not a
    rotational uncertainty). Corrections with ``evaluation_options`` may ask for more.
    """
    from ase_symdiag.o3.quadrature import O3Quadrature

    own = False
    for correction in corrections:
        if hasattr(correction, "evaluation_options"):
            options = correction.evaluation_options(dict(options), structure)
        if hasattr(correction, "rotations"):
            rotations, weights = correction.rotations(structure)
            rotations = np.asarray(rotations, dtype=np.float64)
            weights = np.asarray(weights, dtype=np.float64)
            name = getattr(correction, "name", "rotations")
            if quadrature is None:
                own = True
                improper = bool(np.any(np.linalg.det(rotations) < 0))
                quadrature = O3Quadrature(rotations, weights / weights.sum(), -1, name, improper)
            else:
                combined = np.einsum("kab,jbc->kjac", quadrature.rotations, rotations).reshape(-1, 3, 3)
                combined_weights = np.outer(quadrature.weights, weights / weights.sum()).reshape(-1)
                quadrature = O3Quadrature(
                    combined, combined_weights, quadrature.degree, f"{quadrature.name}*{name}", quadrature.improper
                )
    return quadrature, own, options


def correct_prediction(
    corrections: Sequence, mean: dict, structure: Structure, masses, forces_key: str, stress_key: str
) -> dict:
    """Calculator hook after averaging: apply ``corrections`` to the averaged outputs.

    ``mean`` uses the evaluation's keys (``forces``/``direct_forces``, ...); the
    corrections see the outputs the calculator returns under ``forces``/``stress``
    (plus ``conservative_forces`` when direct forces are returned and conservative
    ones were computed). Returns a new dict with the same keys as ``mean``.
    """
    outputs: Outputs = {
        "energy": float(mean["energy"]),
        "forces": mean.get(forces_key),
        "stress": mean.get(stress_key),
        "energies": mean.get("energies"),
    }
    if forces_key != "forces" and "forces" in mean:
        outputs["conservative_forces"] = mean["forces"]
    for correction in corrections:
        outputs = correction(outputs, structure, masses)
    new = dict(mean)
    new["energy"] = outputs["energy"]
    for name, key in (("forces", forces_key), ("stress", stress_key), ("energies", "energies")):
        if key in mean and outputs.get(name) is not None:
            new[key] = outputs[name]
    return new
