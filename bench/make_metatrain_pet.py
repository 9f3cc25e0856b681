"""Write an untrained metatrain PET (default hypers, Cu, random weights, seed 0) as
a metatomic model, for benchmarks only (its predictions mean nothing; its cost is
that of a production PET of the same size).

    pip install metatrain==2026.4.1
    python bench/make_metatrain_pet.py /tmp/metatrain-pet-cu.pt
"""

import sys
import warnings

warnings.filterwarnings("ignore")


def main(path: str) -> int:
    import torch
    from metatrain.pet import PET
    from metatrain.utils.architectures import get_default_hypers
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info

    torch.manual_seed(0)
    hypers = get_default_hypers("pet")["model"]
    info = DatasetInfo(
        length_unit="Angstrom",
        atomic_types=[29],
        targets={"energy": get_energy_target_info("energy", {"quantity": "energy", "unit": "eV"})},
    )
    model = PET(hypers, info).to(torch.float64 if "--float64" in sys.argv else torch.float32)
    exported = model.export()
    exported.save(path)
    caps = exported.capabilities()
    print(f"wrote {path}: metatrain PET, {sum(p.numel() for p in model.parameters())} parameters, "
          f"cutoff {hypers['cutoff']}, interaction range {caps.interaction_range}, dtype {caps.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
