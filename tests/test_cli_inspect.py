"""`molvae reconstruct | neighbours | interpolate | sample --properties`: one row per input
record, ids and input columns kept, the model's view of each molecule, property columns."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from rdkit import Chem

from molvae.cli import main
from molvae.cli_inspect import CHECK_COLUMNS
from molvae.columns import ColumnError, parse_properties, property_table

MESSY = Path(__file__).resolve().parent.parent / "data" / "examples" / "messy.smi"
DRUGS = Path(__file__).resolve().parent.parent / "data" / "examples" / "drugs.csv"


@pytest.fixture(scope="module")
def run_dir(trained_run) -> str:
    return str(trained_run[0])


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, cap.err


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


def test_reconstruct_keeps_every_line_with_ids_and_notes(capsys, run_dir):
    code, out, err = _run(capsys, "-q", "reconstruct", MESSY, "--model", run_dir, "--seed", 0)
    assert code == 0, err
    rows = _rows(out)
    lines = MESSY.read_text().splitlines()
    assert len(rows) == len(lines)
    assert [r["line"] for r in rows] == [str(i) for i in range(1, len(lines) + 1)]
    by_id = {r["id"]: r for r in rows if r["id"]}
    assert [r["status"] for r in rows if not r["id"]] == ["empty"] * 3  # comment + 2 blank
    assert by_id["not_a_smiles"]["status"] == "invalid"
    assert by_id["cisplatin"]["status"] == "unknown_token"
    assert "Pt" in by_id["cisplatin"]["reason"]
    assert "stereo" in by_id["dexibuprofen"]["note"]
    acetate = by_id["sodium_acetate"]
    assert acetate["standardized"] == "CC(=O)O" and "neutraliz" in acetate["note"]
    for r in rows:
        ok = r["status"] == "ok"
        assert r["smiles"] == r["reconstruction"]
        if not ok:
            assert not r["reconstruction"]
        assert r["exact"] in (("yes", "no") if ok else ("",))
        if ok:
            assert (r["exact"] == "yes") == (r["reconstruction"] == r["standardized"])
            assert bool(r["similarity"]) == bool(r["reconstruction"])
            assert not r["similarity"] or 0.0 <= float(r["similarity"]) <= 1.0
    assert list(rows[0])[:5] == ["line", "id", "input", "smiles", "standardized"]


def test_reconstruct_csv_passes_columns_through_and_writes_smi(capsys, tmp_path, run_dir):
    out = tmp_path / "rec.smi"
    code, _, err = _run(capsys, "-q", "reconstruct", DRUGS, "--model", run_dir, "--seed", 0,
                        "-o", out)
    assert code == 0, err
    text = out.read_bytes()
    assert b"\r\n" not in text
    lines = text.decode().splitlines()
    assert len(lines) == 40 and not lines[0].lower().startswith("smiles")
    assert lines[0].split("\t")[1] == "aspirin"
    code, csv_out, err = _run(capsys, "-q", "reconstruct", DRUGS, "--model", run_dir,
                              "--seed", 0, "--id-column", "class")
    rows = _rows(csv_out)
    assert rows[0]["id"] == "analgesic" and rows[0]["name"] == "aspirin"
    assert "class" not in rows[0]  # the id source is the id column


def test_reconstruct_sdf_output_has_title_smiles_and_columns(capsys, tmp_path, run_dir):
    out = tmp_path / "rec.sdf"
    code, _, err = _run(capsys, "-q", "reconstruct", DRUGS, "--model", run_dir, "--seed", 0,
                        "-o", out)
    assert code == 0, err
    mols = list(Chem.ForwardSDMolSupplier(str(out)))
    assert len(mols) == 40
    first = mols[0]
    assert first.GetProp("_Name") == "aspirin"
    assert first.GetProp("input") == "CC(=O)Oc1ccccc1C(=O)O"
    assert first.GetProp("class") == "analgesic"
    assert first.HasProp("SMILES") and first.HasProp("exact")


def test_encode_reports_the_model_view(capsys, run_dir):
    code, out, err = _run(capsys, "-q", "encode", DRUGS, "--model", run_dir, "--seed", 0,
                          "--properties", "qed,heavy_atoms")
    assert code == 0, err
    rows = _rows(out)
    assert len(rows) == 40
    for c in CHECK_COLUMNS + ["qed", "heavy_atoms", "class", "z0"]:
        assert c in rows[0], c
    assert rows[0]["heavy_atoms"] == "13"  # aspirin


def test_interpolate_rows_start_and_end_at_the_inputs(capsys, run_dir):
    code, out, err = _run(capsys, "-q", "interpolate", "OCC", "c1ccccc1O", "--steps", 5,
                          "--model", run_dir, "--seed", 0)
    assert code == 0, err
    rows = _rows(out)
    assert [r["smiles"] for r in (rows[0], rows[-1])] == ["CCO", "Oc1ccccc1"]
    assert [r["kind"] for r in rows] == ["input"] + ["decoded"] * 3 + ["input"]
    assert rows[0]["similarity_to_start"] == "1.000" == rows[-1]["similarity_to_end"]


def test_neighbours_command(capsys, tmp_path, run_dir):
    image = tmp_path / "nb.svg"
    code, out, err = _run(capsys, "-q", "neighbours", "CCOc1ccccc1C(N)=O", "-n", 3,
                          "--scale", 1.0, "--model", run_dir, "--seed", 0,
                          "--temperature", 1.0, "--properties", "qed", "--image", image)
    assert code == 0, err
    rows = _rows(out)
    assert rows[0]["kind"] == "input" and rows[0]["smiles"] == "CCOc1ccccc1C(N)=O"
    assert all(r["kind"] == "neighbour" for r in rows[1:])
    sims = [float(r["similarity"]) for r in rows[1:]]
    assert sims == sorted(sims, reverse=True)
    assert all(r["qed"] for r in rows)
    assert image.read_text().lstrip().startswith("<")


def test_sample_properties_columns(capsys, tmp_path, run_dir):
    train = tmp_path / "train.smi"
    train.write_text("CCO\n")
    code, out, err = _run(capsys, "-q", "sample", "-n", 6, "--model", run_dir, "--seed", 3,
                          "--properties", "qed,sa,filters,novel", "--train", train)
    assert code == 0, err
    rows = _rows(out)
    assert list(rows[0]) == ["smiles", "index", "status", "qed", "sa", "filters",
                             "filters_reason", "novel"]
    for r in rows:
        if r["status"] == "ok":
            assert 0 < float(r["qed"]) <= 1 and r["filters"] in ("pass", "fail")
            assert (r["filters"] == "fail") == bool(r["filters_reason"])
            assert r["novel"] == ("no" if r["smiles"] == "CCO" else "yes")


def test_property_table_and_names():
    cols, rows = property_table(["CCO", None, "c1ccccc1C(=O)O"], ["mw", "filters"])
    assert cols == ["mw", "filters", "filters_reason"]
    assert rows[0]["mw"] == "46.07" and rows[1] == {"mw": "", "filters": "",
                                                   "filters_reason": ""}
    with pytest.raises(ColumnError, match="did you mean 'tpsa'"):
        parse_properties("tspa")
    with pytest.raises(ColumnError, match="twice"):
        parse_properties("qed,qed")
    with pytest.raises(ColumnError, match="--train"):
        property_table(["CCO"], ["novel"], model=None)


def test_novel_against_the_shipped_train_hashes():
    import molvae
    from molvae.metrics import load_moses
    known = load_moses("train")[0]
    from rdkit import Chem as _Chem
    canonical = _Chem.MolToSmiles(_Chem.MolFromSmiles(known))
    cols, rows = property_table([canonical, "CC(=O)Nc1ccc(O)cc1", None], ["novel"],
                                model=molvae.load())
    assert [r["novel"] for r in rows] == ["no", "yes", ""]
