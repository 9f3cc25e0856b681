#!/usr/bin/env bash
# Produce every file the LAMMPS inputs of this folder read (they are also shipped).
#   bash lammps_examples/make_models.sh
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# raw model (LAMMPS-ready wrapper of ../models/morse-broken-l2.pt) and the data files
python make_models.py
# symmetrized export: average over the chiral octahedral group with inversion (48 O(3)
# operations, exact up to degree 3, removes the planted lambda = 2 breaking exactly)
ase-symdiag symmetrize morse-broken-l2-lammps.pt ../docs/examples/structures.extxyz --index 0 \
    --quadrature O --export morse-broken-l2-symmetrized.pt
# PET export: the shipped Cu PET (float32) averaged over O_h (in.cu-pet-symmetrized)
ase-symdiag symmetrize ../models/cu-emt-augmented.pt ../docs/examples/structures.extxyz --index 0 \
    --quadrature O --export cu-emt-augmented-symmetrized.pt
# corrected export for 'non_conservative on' (in.cu-corrected; single MPI rank)
ase-symdiag symmetrize morse-broken-l2-lammps.pt ../docs/examples/structures.extxyz --index 0 \
    --quadrature O --corrected --export morse-broken-l2-corrected.pt
