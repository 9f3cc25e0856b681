"""Raw outputs of a metatomic model through metatomic-ase, and their in-process
quadrature average, for the tests of what symmetrized exports carry over."""

import numpy as np
from metatomic.torch import ModelOutput


def run_outputs(model, atoms, names, selected_atoms=None):
    """``{name: values}`` of the outputs ``names`` of ``model`` (path or AtomisticModel)
    on ``atoms``, through ``MetatomicCalculator.run_model``."""
    from metatomic_ase import MetatomicCalculator

    calculator = MetatomicCalculator(model, check_consistency=True)
    capabilities = calculator._model.capabilities().outputs
    requests = {name: ModelOutput(sample_kind=capabilities[name].sample_kind) for name in names}
    results = calculator.run_model(atoms, requests, selected_atoms)
    return {name: results[name].block().values.detach().numpy() for name in names}


def in_process_average(model, atoms, name, quadrature):
    """``sum_k w_k y(R_k x)`` of the scalar output ``name`` of ``model`` over the named
    ``quadrature``, one metatomic-ase call per rotated copy (finite ``atoms`` only)."""
    from ase_symdiag.o3.quadrature import resolve_quadrature

    assert not atoms.pbc.any()
    q = resolve_quadrature(quadrature)
    total = 0.0
    for rotation, weight in zip(q.rotations, q.weights):
        turned = atoms.copy()
        turned.positions = atoms.positions @ np.asarray(rotation).T
        total = total + weight * run_outputs(model, turned, [name])[name]
    return total
