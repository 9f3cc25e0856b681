"""Small random-weight models of other families (no downloads), for tests and ``module:callable`` specs.

``small_orb(kind)``: orb-v3 ``kind`` ("direct"/"conservative") built by orb-models'
own architecture function with small sizes, float64, as an
:class:`~ase_symdiag.backends.orb.OrbModel`. ``small_mace()``: a ScaleShiftMACE
(Cu, C, H, O; r_max 4 Å; l_max 2), float64, through torch-sim's ``MaceModel``.
The argument-free functions are what ``tests.family_models:...`` specs name.
"""

import warnings

import torch

#: orb-models 0.5.0 hands a torch tensor to ase's cell_to_cellpar (numpy >= 2 warns): a pytest filter
ORB_NUMPY_WARNING = "ignore:__array__ implementation:DeprecationWarning"

#: sizes of the small orb-v3 models (the real ones: 256, 1024, 256, 5)
ORB_SIZES = {"latent_dim": 32, "base_mlp_hidden_dim": 64, "head_mlp_hidden_dim": 32, "num_message_passing_steps": 2}


def small_orb_regressor(kind: str, seed: int = 0):
    """orb-models' regressor (not wrapped), random weights from ``seed``, float64, in eval mode
    (in train mode orb's online normalisers change with every call)."""
    from ase_symdiag.backends.orb import build_architecture

    torch.manual_seed(seed)
    return build_architecture(f"orb-v3-{kind}", **ORB_SIZES).double().eval()  # train mode updates normalisers


def small_orb(kind: str = "direct", seed: int = 0):
    from ase_symdiag.backends.orb import OrbModel

    return OrbModel(small_orb_regressor(kind, seed), dtype=torch.float64, source=f"small orb-v3-{kind}")


def small_mace_module(seed: int = 0):
    """A random ScaleShiftMACE module (float64)."""
    import numpy as np

    from ase_symdiag.backends.mace import _E3NN_JIT_WARNING, import_mace_torchsim

    import_mace_torchsim()  # imports mace with the environment restored
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_E3NN_JIT_WARNING)
            model = modules.ScaleShiftMACE(
                r_max=4.0,
                num_bessel=4,
                num_polynomial_cutoff=5,
                max_ell=2,
                interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                num_interactions=2,
                num_elements=4,
                hidden_irreps=o3.Irreps("8x0e + 8x1o"),
                MLP_irreps=o3.Irreps("8x0e"),
                atomic_energies=np.array([-1.0, -2.0, -3.0, -4.0]),
                avg_num_neighbors=8.0,
                atomic_numbers=[1, 6, 8, 29],
                correlation=2,
                gate=torch.nn.functional.silu,
                atomic_inter_scale=1.0,
                atomic_inter_shift=0.0,
            )
    finally:
        torch.set_default_dtype(previous)
    return model


def small_mace():
    from ase_symdiag.backends.mace import mace_model

    return mace_model(small_mace_module(), dtype=torch.float64)


def orb_direct():
    """``tests.family_models:orb_direct`` (a ``module:callable`` spec)."""
    return small_orb("direct")


def orb_calculator():
    """orb-models' own ASE calculator on the small direct model (per-rotation path),
    float32: ORBCalculator builds its graphs in torch's default dtype."""
    from orb_models.forcefield.calculator import ORBCalculator

    return ORBCalculator(small_orb_regressor("direct").float(), device="cpu")


def not_a_model():
    return 42
