"""Pictures (molvae.draw, molvae.plots) and result tables (molvae.io): valid files, nothing
dropped."""

from __future__ import annotations

import csv
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from molvae.draw import PictureError, interpolation_strip, molecule_grid
from molvae.io import OutputError, TableWriter
from molvae.plots import latent_map, property_histograms, training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MOLS = ["CCO", None, "c1ccccc1", "xyz", "", "CC(=O)Nc1ccc(O)cc1", "C1CC"]


def _png_size(path: Path) -> tuple[int, int]:
    blob = path.read_bytes()
    assert blob[:8] == PNG_MAGIC, blob[:16]
    assert blob[12:16] == b"IHDR"
    return struct.unpack(">II", blob[16:24])


def _check_svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg"), root.tag
    return root


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------------------------ grids
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_molecule_grid_with_invalid_molecules(tmp_path, suffix):
    path = tmp_path / f"grid{suffix}"
    assert molecule_grid(MOLS, path) == len(MOLS)
    if suffix == ".png":
        _check_png(path)
    else:
        _check_svg(path)


def test_molecule_grid_has_no_cap(tmp_path):
    mols = (["CCO", "c1ccccc1", None, "CCN", "xyz"] * 12)[:60]
    path = tmp_path / "grid.png"
    assert molecule_grid(mols, path, per_row=5, size=(100, 80)) == 60
    assert _png_size(path) == (5 * 100, 12 * 80)
    svg = tmp_path / "grid.svg"
    assert molecule_grid(mols, svg, per_row=7, size=(100, 80)) == 60
    root = _check_svg(svg)
    assert root.get("width", "").startswith("700") and root.get("height", "").startswith("720")


@pytest.mark.parametrize(("n", "per_row", "cell", "want"),
                         [(1, 5, (120, 90), (120, 90)), (7, 3, (150, 100), (450, 300)),
                          (10, 5, (250, 200), (1250, 400))])
def test_molecule_grid_png_size(tmp_path, n, per_row, cell, want):
    path = tmp_path / "g.png"
    assert molecule_grid(["CCO"] * n, path, per_row=per_row, size=cell) == n
    assert _png_size(path) == want


def test_molecule_grid_with_legends(tmp_path):
    path = tmp_path / "g.svg"
    assert molecule_grid(["CCO", None], path, legends=["ethanol", "nothing"]) == 2
    _check_svg(path)


def test_molecule_grid_errors(tmp_path):
    with pytest.raises(PictureError, match="png or .svg"):
        molecule_grid(["CCO"], tmp_path / "g.jpg")
    with pytest.raises(PictureError):
        molecule_grid([], tmp_path / "g.png")
    assert issubclass(PictureError, ValueError)
    assert not (tmp_path / "g.jpg").exists()


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_interpolation_strip(tmp_path, suffix):
    path = tmp_path / "sub" / f"strip{suffix}"  # the folder is made
    steps = ["CCO", "CCN", None, "c1ccccc1"]
    assert interpolation_strip(steps, path, size=(100, 90)) == 4
    if suffix == ".png":
        assert _png_size(path) == (400, 90)
    else:
        _check_svg(path)
    with pytest.raises(PictureError):
        interpolation_strip(steps, tmp_path / "strip.gif")


# ------------------------------------------------------------------------------------ plots
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_property_histograms(tmp_path, suffix):
    rng = np.random.default_rng(0)
    samples = {"qed": list(rng.random(50)) + [float("nan")], "logp": rng.normal(2, 1, 50)}
    reference = {"qed": rng.random(80), "logp": rng.normal(2.5, 1, 80), "sa": rng.random(80)}
    path = tmp_path / f"props{suffix}"
    property_histograms(samples, reference, path)
    if suffix == ".png":
        _check_png(path)
    else:
        _check_svg(path)
    with pytest.raises(PictureError):
        property_histograms({"a": [1.0]}, {"b": [1.0]}, tmp_path / "none.png")
    with pytest.raises(PictureError):
        property_histograms(samples, reference, tmp_path / "props.pdf")


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_latent_map(tmp_path, suffix):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40, 8))
    z[3] = np.nan  # an input that could not be encoded
    values = rng.random(40)
    values[5] = np.nan
    path = tmp_path / f"latent{suffix}"
    latent_map(z, values, path, label="qed")
    if suffix == ".png":
        _check_png(path)
    else:
        _check_svg(path)
    with pytest.raises(PictureError):
        latent_map(z[:2], values[:2], tmp_path / "few.png")


def test_training_curves_of_the_tiny_run(tmp_path, trained_run):
    run, _ = trained_run
    png = tmp_path / "curves.png"
    training_curves(run / "metrics.csv", png)
    _check_png(png)
    svg = tmp_path / "curves.svg"
    training_curves(run, svg)  # the run folder works too
    _check_svg(svg)


def test_training_curves_errors(tmp_path):
    with pytest.raises(PictureError, match="metrics.csv"):
        training_curves(tmp_path, tmp_path / "c.png")
    (tmp_path / "metrics.csv").write_text("step,epoch,split,loss\n")
    with pytest.raises(PictureError, match="no rows"):
        training_curves(tmp_path, tmp_path / "c.png")


# ----------------------------------------------------------------------------------- tables
ROWS = [{"smiles": "CCO", "index": 0, "status": "ok"},
        {"smiles": None, "index": 1, "status": "invalid"},
        {"smiles": "c1ccccc1", "index": 2, "status": "ok"},
        {"smiles": None, "index": 3, "status": "invalid"}]
COLUMNS = ["smiles", "index", "status"]


def _write(path, rows=ROWS) -> None:
    w = TableWriter(path, COLUMNS)
    w.write_rows(rows[:2])
    w.write_rows(iter(rows[2:]))  # any iterable, in several calls
    w.close()


def test_table_csv_keeps_every_row(tmp_path):
    path = tmp_path / "out" / "t.csv"
    _write(path)
    with path.open(newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["smiles"] for r in got] == ["CCO", "", "c1ccccc1", ""]
    assert [r["index"] for r in got] == ["0", "1", "2", "3"]
    assert [r["status"] for r in got] == ["ok", "invalid", "ok", "invalid"]


def test_table_smi_keeps_every_row(tmp_path):
    path = tmp_path / "t.smi"
    _write(path)
    lines = path.read_text().splitlines()  # SMILES<TAB>name, no header
    assert [ln.split("\t") for ln in lines] == [["CCO", "0"], ["", "1"], ["c1ccccc1", "2"],
                                                ["", "3"]]


def test_table_sdf_keeps_every_row(tmp_path):
    from rdkit import Chem
    path = tmp_path / "t.sdf"
    _write(path)
    text = path.read_text()
    assert text.count("$$$$") == len(ROWS)
    mols = list(Chem.SDMolSupplier(str(path)))
    assert len(mols) == len(ROWS)
    assert [m.GetProp("index") for m in mols] == ["0", "1", "2", "3"]
    assert [m.GetProp("status") for m in mols] == ["ok", "invalid", "ok", "invalid"]
    assert [m.GetNumAtoms() for m in mols] == [3, 0, 6, 0]


def test_table_stdout_csv(capsys):
    _write(None)
    out = capsys.readouterr().out
    got = list(csv.DictReader(out.splitlines()))
    assert len(got) == len(ROWS) and got[1]["smiles"] == "" and got[1]["status"] == "invalid"


def test_table_bad_suffix(tmp_path):
    with pytest.raises(OutputError, match=r"\.csv"):
        TableWriter(tmp_path / "t.xlsx", COLUMNS)
    assert issubclass(OutputError, ValueError)
    assert not (tmp_path / "t.xlsx").exists()
