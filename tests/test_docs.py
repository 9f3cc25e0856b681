"""Measured doc sections are what their committed data render (bench/pet_study_page.py).

No number is recomputed here (the study trains for an hour): the page's measured section
must be exactly the text its committed stage files give, so an edit by hand, or data
committed without regenerating the page, fails.
"""

import importlib
import shutil
import sys

import pytest

from repo import ROOT


@pytest.fixture(scope="module")
def page():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        yield importlib.import_module("pet_study_page")
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_pet_study_page_is_what_its_data_render(page):
    assert page.check_page() is None


def test_every_study_run_is_on_the_page(page):
    text = (ROOT / "docs" / "pet_study.md").read_text()
    for data in ("ethanol-xtb", "cu-emt"):
        for variant in ("augmented", "plain"):
            assert (ROOT / "docs" / "benchmarks" / "pet_study" / f"{data}-{variant}" / "train.json").exists()
            assert f"| {data} | {variant} |" in text
    for plot in ("ethanol-xtb-history.png", "cu-emt-history.png", "calibration.png"):
        assert (ROOT / "docs" / "pet_study" / plot).exists()
        assert f"(pet_study/{plot})" in text


@pytest.mark.parametrize("edit", ["number", "row", "data"])
def test_check_finds_a_page_out_of_step_with_its_data(page, tmp_path, edit):
    doc = tmp_path / "pet_study.md"
    data = tmp_path / "data"
    shutil.copyfile(ROOT / "docs" / "pet_study.md", doc)
    shutil.copytree(ROOT / "docs" / "benchmarks" / "pet_study", data)
    assert page.check_page(str(doc), str(data)) is None
    head, section, tail = page.split_page(doc.read_text(), str(doc))
    lines = section.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("| ethanol-xtb | plain |"))
    if edit == "number":
        cells = lines[row].split(" | ")
        cells[2] = "0.5" if cells[2] != "0.5" else "0.6"
        lines[row] = " | ".join(cells)
    elif edit == "row":
        del lines[row]
    if edit == "data":
        errors = data / "ethanol-xtb-plain" / "errors.json"
        errors.write_text(errors.read_text().replace('"energy_rmse_meV_per_atom": ', '"energy_rmse_meV_per_atom": 1'))
    else:
        doc.write_text(head + page.BEGIN + "\n" + "\n".join(lines) + "\n" + page.END + tail)
    assert page.check_page(str(doc), str(data)) is not None
