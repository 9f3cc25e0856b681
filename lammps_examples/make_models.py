"""Write the models and data files that the LAMMPS inputs of this folder read.

    python make_models.py            # (make_models.sh runs it, then exports the symmetrized model)

- ``morse-broken-l2-lammps.pt``: a copy of ``models/morse-broken-l2.pt`` (the Cu Morse
  pair potential with a planted lambda = 2 symmetry breaking). ``pair_style metatomic``
  always passes ``selected_atoms`` (the atoms owned by the MPI rank); the shipped
  models and symmetrized exports honour it (tested in tests/test_export.py).
- ``cu-fcc.data``: 4x4x4 cubic fcc Cu cells (256 atoms, a = 3.61 Å), rattled.
- ``water.data``: 32 water molecules in a 9.86 Å box (1 g/cm^3), types O=1, H=2.
"""

import os
import sys
import warnings

warnings.filterwarnings("ignore", message=".*TorchScript.*")
warnings.filterwarnings("ignore", message=".*torch.jit.*")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def copy_model(source: str, target: str) -> None:
    """The shipped model, re-saved next to the inputs (it handles ``selected_atoms``)."""
    from metatomic.torch import load_atomistic_model

    load_atomistic_model(source).save(target)
    print(f"wrote {os.path.relpath(target)}")


def write_data() -> None:
    import ase.io
    import numpy as np
    from ase import Atoms
    from ase.build import bulk, molecule

    cu = bulk("Cu", "fcc", a=3.61, cubic=True) * (4, 4, 4)
    cu.rattle(0.02, seed=7)
    ase.io.write(os.path.join(HERE, "cu-fcc.data"), cu, format="lammps-data", specorder=["Cu"],
                 masses=True, units="metal", atom_style="atomic")
    rng = np.random.default_rng(3)
    box = 9.86
    water = Atoms(cell=[box] * 3, pbc=True)
    grid = (np.arange(4) + 0.5) * box / 4
    points = np.array([[x, y, z] for x in grid for y in grid for z in grid])[rng.permutation(64)[:32]]
    for point in points:
        m = molecule("H2O")
        m.rotate(rng.uniform(0, 360), rng.normal(size=3))
        m.translate(point - m.get_center_of_mass())
        water += m
    ase.io.write(os.path.join(HERE, "water.data"), water, format="lammps-data", specorder=["O", "H"],
                 masses=True, units="metal", atom_style="atomic")
    print("wrote cu-fcc.data, water.data")


if __name__ == "__main__":
    copy_model(os.path.join(ROOT, "models", "morse-broken-l2.pt"), os.path.join(HERE, "morse-broken-l2-lammps.pt"))
    write_data()
    sys.exit(0)
