"""Beyond atoms: the diagnostics on point clouds, a toy LArTPC event generator and a
PointNet-style segmenter trained with and without rotational augmentation (a demo of
:mod:`ase_symdiag.backends.pointcloud`; imported only when used)."""
