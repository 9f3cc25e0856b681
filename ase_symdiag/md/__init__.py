"""Molecular-dynamics stability runs: raw, symmetrized and corrected models side by side.

:func:`run_md` integrates the same starting structure (same initial velocities) with
several *variants* of a model and records, every ``interval`` steps, the energies,
temperature, total and angular momentum, pressure, the smallest interatomic distance
and the largest force. A variant stops at the first sign of failure (atoms closer
than ``min_distance``, non-finite forces or forces above ``max_force``, a jump of the
total energy larger than ``max_energy_jump`` eV/atom between two records in NVE, a
calculator that refuses its own non-finite outputs or the integrated structure), and
the time and reason are reported. Any other exception in a step (a bug, a model that
raises) is an error, not an instability: :class:`MDError` naming the variant and step.

ASE constraints of the structure are honoured, kept in checkpoints and compared on
resume (:mod:`~ase_symdiag.md.constraints`). One run at a time writes into an output
directory (a lock file, ``.md.lock``).

Modules:

- :mod:`~ase_symdiag.md.variants`: the ``raw``, ``symmetrized`` and ``corrected``
  calculators of a model, or any ASE calculator under a name of your choice;
- :mod:`~ase_symdiag.md.observables`: what is recorded, the failure checks, the summary;
- :mod:`~ase_symdiag.md.io`: per-variant ``NAME.traj``, ``NAME.log``,
  ``NAME.state.json`` (checkpoint every ``checkpoint_every`` steps) and ``NAME.json``;
- :mod:`~ase_symdiag.md.plot`: ``md.png`` (one curve per variant) and the text table;
- :mod:`~ase_symdiag.md.runner`: :func:`run_md`, which also writes ``summary.json``;
- :mod:`~ase_symdiag.md.lammps`: LAMMPS as the integrator, our calculator for the forces.

With ``resume=True`` each variant continues from its checkpoint: the trajectory and
log are cut back to the checkpoint and extended, so an interrupted run and an
uninterrupted one give the same files (the random numbers of the thermostat are
restored too). The command line is :mod:`ase_symdiag.cli.md` (``ase-symdiag md``).

Units: time in fs (ps in summaries), energies in eV (drift in meV/atom/ps),
temperature in K, pressure in GPa, distances in Å, forces in eV/Å, momentum in
amu Å/fs, angular momentum in amu Å^2/fs.
"""

from ase_symdiag.md.errors import MDError
from ase_symdiag.md.lammps import lammps_external_md
from ase_symdiag.md.observables import COLUMNS, minimum_distance, summarize
from ase_symdiag.md.plot import plot_md, summary_table
from ase_symdiag.md.runner import MDResult, VariantResult, run_md
from ase_symdiag.md.variants import KNOWN_VARIANTS, make_calculator

__all__ = [
    "COLUMNS",
    "KNOWN_VARIANTS",
    "MDError",
    "MDResult",
    "VariantResult",
    "lammps_external_md",
    "make_calculator",
    "minimum_distance",
    "plot_md",
    "run_md",
    "summarize",
    "summary_table",
]
