"""structures.read_frames / read_structures: ASE indices with Python's meaning, file frame
numbers in labels, one-line messages that say what was expected (issue 20)."""

import ase.io
import pytest
from ase.build import bulk

from ase_symdiag.errors import StructureError
from ase_symdiag.structures import read_frames, read_structures


@pytest.fixture
def three_frames(tmp_path):
    """A 3-frame extxyz; frame k is named 'frame<k>'."""
    images = []
    for k in range(3):
        atoms = bulk("Cu", "fcc", a=3.61 + 0.01 * k, cubic=True)
        atoms.info["name"] = f"frame{k}"
        images.append(atoms)
    path = tmp_path / "three.extxyz"
    ase.io.write(path, images)
    return str(path)


@pytest.mark.parametrize(
    "index, frames",
    [(":", [0, 1, 2]), ("0", [0]), ("2", [2]), ("-1", [2]), ("-3", [0]), ("1:", [1, 2]), ("-2:", [1, 2]), ("::2", [0, 2])],
)
def test_index_selects_python_frames_and_labels_keep_them(three_frames, index, frames):
    images, numbers = read_frames(three_frames, index)
    assert numbers == frames
    assert [atoms.info["name"] for atoms in images] == [f"frame{k}" for k in frames]
    assert [s.label for s in read_structures(three_frames, index)] == [f"{k}:frame{k}" for k in frames]


@pytest.mark.parametrize("index", ["3", "-4", "-5", "10"])
def test_index_out_of_range_is_refused(three_frames, index):
    """ASE reads frame 0 for -5 on a 3-frame extxyz: a silent wrong structure."""
    with pytest.raises(StructureError, match=f"--index {index} is out of range: .* holds 3 structure"):
        read_frames(three_frames, index)


@pytest.mark.parametrize("index", ["5:", "x"])
def test_empty_or_bad_index_is_refused(three_frames, index):
    with pytest.raises(StructureError, match="no structures in|not an ASE index"):
        read_frames(three_frames, index)


def test_a_model_read_as_structures_names_what_was_expected(tmp_path):
    model = tmp_path / "pet.pt"
    model.write_bytes(b"PK\x03\x04 not a structure")
    with pytest.raises(StructureError) as info:
        read_structures(str(model))
    message = str(info.value)
    assert "expected a structure file ASE can read (e.g. extxyz, xyz, cif, POSCAR)" in message
    assert "looks like a model file" in message and "\n" not in message
