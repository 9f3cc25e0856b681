"""How rotated copies of a structure are evaluated, one module per kind of model.

Every backend returns rotated-frame samples in one shared format
(:class:`~ase_symdiag.backends.samples.Predictions` for atomistic models, a dict of
arrays for point clouds), so that every metric in :mod:`ase_symdiag.metrics` is
written once. :mod:`~ase_symdiag.backends.dispatch` turns any model into the
``Evaluator`` of its backend; the code that evaluates and then measures is in
:mod:`ase_symdiag.drivers`, and no backend imports a metric. The backends:

- :mod:`~ase_symdiag.backends.metatomic`: metatomic TorchScript models (batched,
  one shared neighbour list per structure) and their TorchScript exports;
- :mod:`~ase_symdiag.backends.torchsim`: any TorchSim ``ModelInterface`` (Orb, MACE,
  ...), the rotated copies as one batch of systems;
- :mod:`~ase_symdiag.backends.ase`: any ASE calculator, one call per operation;
- :mod:`~ase_symdiag.backends.pointcloud`: any torch callable on a decorated point cloud.
"""
