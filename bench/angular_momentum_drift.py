"""Angular momentum in NVE: raw broken model vs NetForce + NetTorque corrections (issue 6).

Runs velocity Verlet on the rattled 13-atom Cu icosahedron with the Morse pair potential
carrying a planted lambda = 2 quadrupole (``quadrupole`` eV/Å^2 along z), starting from
Maxwell-Boltzmann velocities with zero total momentum and zero angular momentum, once
with the raw model and once with ``corrections=["net_force", "net_torque"]`` (the two
runs in parallel processes, one torch thread each). Prints the drift numbers and writes
``|L(t)|`` to a PNG atomically (:func:`ase_symdiag.report.atomic_savefig`).

    OMP_NUM_THREADS=1 python bench/angular_momentum_drift.py            # 10 ps, dt = 2 fs
    OMP_NUM_THREADS=1 python bench/angular_momentum_drift.py --time-ps 2 --dt-fs 0.5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def run(args):
    """One NVE run; returns (times fs, |L| amu Å^2/fs, total energy eV, scale, wall s)."""
    model, corrections, time_ps, dt_fs, temperature, every, seed = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from ase import units
    from ase.cluster import Icosahedron
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    from ase_symdiag import SymDiagCalculator

    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=2)
    masses = atoms.get_masses()
    rng = np.random.default_rng(seed)
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(units.kB * temperature * masses)[:, None])
    Stationary(atoms)
    ZeroRotation(atoms)
    r = atoms.positions - atoms.get_center_of_mass()
    scale = float(np.sum(masses * np.linalg.norm(r, axis=1) * np.linalg.norm(atoms.get_velocities(), axis=1)))
    atoms.calc = SymDiagCalculator(model, corrections=corrections)
    steps = int(round(time_ps * 1000.0 / dt_fs))
    times, momenta, energies = [], [], []

    def observe():
        times.append(dynamics.nsteps * dt_fs)
        momenta.append(np.linalg.norm(atoms.get_angular_momentum()) * units.fs)
        energies.append(atoms.get_total_energy())

    dynamics = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    dynamics.attach(observe, interval=every)
    start = time.perf_counter()
    dynamics.run(steps)
    wall = time.perf_counter() - start
    return np.array(times), np.array(momenta), np.array(energies), scale * units.fs, wall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-ps", type=float, default=10.0)
    parser.add_argument("--dt-fs", type=float, default=2.0)
    parser.add_argument("--temperature", type=float, default=100.0, help="initial velocities, K")
    parser.add_argument("--quadrupole", type=float, default=0.01, help="planted kappa, eV/Å^2")
    parser.add_argument("--every", type=int, default=10, help="record every n steps")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "..", "docs", "angular_momentum.png"))
    parser.add_argument("--serial", action="store_true", help="run the two simulations one after the other")
    args = parser.parse_args(argv)

    from ase_symdiag.reference.analytic import export_pair_potential

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "broken.pt")
        export_pair_potential(model, quadrupole=args.quadrupole)
        jobs = [
            (model, (), args.time_ps, args.dt_fs, args.temperature, args.every, 0),
            (model, ("net_force", "net_torque"), args.time_ps, args.dt_fs, args.temperature, args.every, 0),
        ]
        start = time.perf_counter()
        if args.serial:
            results = [run(job) for job in jobs]
        else:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(2) as pool:
                results = pool.map(run, jobs)
        total = time.perf_counter() - start

    steps = int(round(args.time_ps * 1000.0 / args.dt_fs))
    print(
        f"Cu13 icosahedron, Morse + quadrupole kappa={args.quadrupole} eV/Å^2, NVE velocity Verlet, "
        f"{args.time_ps:g} ps at dt={args.dt_fs:g} fs ({steps} steps), T0={args.temperature:g} K, L(0)=0"
    )
    for label, (times, momenta, energies, scale, wall) in zip(("raw", "net_force+net_torque"), results):
        print(
            f"{label:>22}: |L| final {momenta[-1]:.3e}, max {momenta.max():.3e} amu Å^2/fs "
            f"(relative to sum m|r||v| = {scale:.3f}: {momenta.max() / scale:.2e}); "
            f"total-energy drift {energies[-1] - energies[0]:+.2e} eV (max dev {np.abs(energies - energies[0]).max():.2e}); "
            f"{wall:.1f} s, {1e3 * wall / steps:.1f} ms/step"
        )
    print(f"wall time (both runs): {total:.1f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_symdiag.report import atomic_savefig

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    floor = 1e-18
    for (times, momenta, _, _, _), label, color in zip(
        results, ("raw model", "NetForce + NetTorque"), ("tab:red", "tab:blue")
    ):
        ax.semilogy(times / 1000.0, np.maximum(momenta, floor), label=label, color=color, lw=1.2)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel(r"$|L|$ (amu Å$^2$/fs)")
    ax.set_title(
        f"Cu$_{{13}}$, Morse + planted $\\lambda=2$ ($\\kappa$={args.quadrupole:g} eV/Å$^2$), NVE dt={args.dt_fs:g} fs",
        fontsize=10,
    )
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    output = os.path.abspath(args.output)
    atomic_savefig(fig, output, dpi=120)
    plt.close(fig)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
