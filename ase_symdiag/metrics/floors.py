"""Floors of the denominators of relative errors and tolerances, one definition each.

``check`` divides a force error by ``max(RMS force component, RELATIVE_FORCE_FLOOR)``
and the adaptive choice takes ``relative_tolerance * max(RMS force component,
RELATIVE_FORCE_FLOOR)`` as its force tolerance: both judge a structure whose forces
are below the floor (a perfect crystal, a relaxed minimum, ~1e-15 eV/Å) on its
absolute error per meV/Å, not on round-off over ~0. numpy-free constants, so that
every metric (and the command line's parser) can import them without torch.
"""

#: eV/Å: floor of the denominator of relative force errors, ``rms(dF) / max(rms(F),
#: floor)``. 1 meV/Å is the convergence of good DFT reference forces and 10-100x below
#: the force errors of ML potentials and the force criteria of relaxations (10-50
#: meV/Å): a structure whose forces are smaller than that (a perfect crystal, a relaxed
#: minimum) is judged on its absolute error per meV/Å, not on round-off over ~0.
RELATIVE_FORCE_FLOOR = 1e-3

#: eV/Å^3 (16 MPa): the same floor for relative stress errors, below the stress
#: convergence of DFT (~0.1 GPa) and the pressure tolerance of barostats.
RELATIVE_STRESS_FLOOR = 1e-4
