"""One row per input record, everywhere: reading (.smi, CSV, SDF) keeps every line or record
with its id and other columns, and every output format keeps every row."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from molvae import chem
from molvae import data as D
from molvae.io import TableWriter, status_table_path, write_status_table
from molvae.readers import DataFileError, RawMolecules, read_molecules

# 18 lines: (line text, expected status, expected id)
SMI_LINES = [
    ("CCO ethanol", "ok", "ethanol"),
    ("", "empty", ""),
    ("c1ccccc1\tbenzene", "ok", "benzene"),
    ("   ", "empty", ""),
    ("# a comment line", "empty", ""),
    ("C1CC broken ring", "invalid", "broken ring"),
    ("CC(=O)O acetic acid", "ok", "acetic acid"),
    ("\t \t", "empty", ""),
    ("CCN", "ok", ""),
    ("  CCC   propane  ", "ok", "propane"),
    ("\tghost", "empty", "ghost"),
    ("*CC wildcard", "unsupported", "wildcard"),
    ("O water", "ok", "water"),
    ("", "empty", ""),
    ("c1ccncc1 pyridine", "ok", "pyridine"),
    ("   # indented comment", "empty", ""),
    ("C[C@H](N)C(=O)O alanine", "ok", "alanine"),
    ("CCCl chloroethane", "ok", "chloroethane"),
]


def _status(raw: RawMolecules, i: int) -> str:
    problem = raw.problem(i)
    return problem[0] if problem else chem.prepare(raw.texts[i]).status


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ------------------------------------------------------------------------------------ .smi
def test_smi_every_line_is_a_row(tmp_path):
    p = _write_lines(tmp_path / "a.smi", [text for text, _, _ in SMI_LINES])
    raw = read_molecules(p)
    assert len(raw) == len(raw.texts) == len(raw.ids) == len(raw.extra) == 18
    assert raw.lines == list(range(1, 19))
    assert [_status(raw, i) for i in range(18)] == [s for _, s, _ in SMI_LINES]
    assert raw.ids == [name for _, _, name in SMI_LINES]
    assert raw.columns == ["name"]
    assert raw.extra[5] == {"name": "broken ring"}
    assert raw.problem(1) == ("empty", "blank line")
    assert raw.problem(3) == ("empty", "blank line")
    assert raw.problem(4) == ("empty", "comment line")
    assert raw.problem(10) == ("empty", "empty SMILES field")
    assert raw.problem(0) is None and raw.texts[0] == "CCO"
    assert raw.texts[9] == "CCC"
    assert raw.texts[1] is None and raw.texts[4] is None
    assert set(raw.errors) == {i for i, (_, s, _) in enumerate(SMI_LINES) if s == "empty"}


def test_smi_header_line_is_not_a_row(tmp_path):
    lines = ["SMILES\tName", *(text for text, _, _ in SMI_LINES[:17])]
    raw = read_molecules(_write_lines(tmp_path / "h.smi", lines))
    assert len(raw) == 17
    assert raw.lines == list(range(2, 19))
    assert raw.ids == [name for _, _, name in SMI_LINES[:17]]


def test_smi_header_after_blank_lines(tmp_path):
    raw = read_molecules(_write_lines(tmp_path / "h.smi", ["", "smiles name", "CCO x"]))
    assert raw.texts == [None, "CCO"] and raw.lines == [1, 3] and raw.ids == ["", "x"]


def test_smi_blank_lines_are_training_rejects(tmp_path, moses_smiles):
    lines = list(moses_smiles[:10])
    lines[3:3] = ["", "   "]  # lines 4 and 5
    p = _write_lines(tmp_path / "t.smi", lines)
    data, _ = D.load_dataset(p, num_workers=1, use_cache=False)
    assert len(data) == 10
    assert [(r[0], r[2], r[3]) for r in data.rejects] == [(4, "empty", "blank line"),
                                                          (5, "empty", "blank line")]
    out = tmp_path / "rejects.csv"
    D.write_rejects(out, data.rejects)
    assert b"\r\n" not in out.read_bytes()
    assert len(out.read_text().splitlines()) == 1 + 2


# ------------------------------------------------------------------------------------- CSV
def test_csv_keeps_ids_and_extra_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("Compound_ID,smiles,score,note\n"
                 "m1,CCO,0.5,first\n"
                 "\n"
                 "m3,,0.1,no molecule\n"
                 "m4,C1CC,0.2,\n"
                 'm5,CCN,0.3,"two\nlines"\n'
                 "m6\n"
                 "m7,c1ccccc1,0.9,last\n")
    raw = read_molecules(p)
    assert raw.texts == ["CCO", None, None, "C1CC", "CCN", None, "c1ccccc1"]
    assert raw.lines == [2, 3, 4, 5, 6, 8, 9]  # the quoted cell spans lines 6 and 7
    assert raw.ids == ["m1", "", "m3", "m4", "m5", "m6", "m7"]
    assert raw.columns == ["Compound_ID", "score", "note"]
    assert raw.extra[0] == {"Compound_ID": "m1", "score": "0.5", "note": "first"}
    assert raw.extra[4]["note"] == "two\nlines"
    assert raw.extra[5] == {"Compound_ID": "m6", "score": "", "note": ""}
    assert raw.problem(1) == ("empty", "blank line")
    assert raw.problem(2) == ("empty", "empty SMILES cell")
    assert raw.problem(5)[0] == "empty" and "no SMILES cell" in raw.problem(5)[1]
    assert raw.problem(3) is None


@pytest.mark.parametrize(("text", "expected"),
                         [("smiles,NAME,x\nCCO,a,1\nCCN,b,2\n", ["a", "b"]),
                          ("smiles,x,chembl_id\nCCO,1,a\nCCN,2,b\n", ["a", "b"]),
                          ("smiles,x,y\nCCO,1,2\nCCN,3,4\n", ["", ""])])
def test_csv_id_column_is_detected(tmp_path, text, expected):
    p = tmp_path / "a.csv"
    p.write_text(text)
    assert read_molecules(p).ids == expected


def test_csv_explicit_id_column(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("id\tsmiles\tregistry\n1\tCCO\tR-7\n2\tCCN\tR-8\n")
    raw = read_molecules(p, id_column="registry")
    assert raw.ids == ["R-7", "R-8"]
    assert raw.columns == ["id", "registry"]
    assert read_molecules(p).ids == ["1", "2"]


def test_csv_missing_id_column_names_the_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,smiles\n1,CCO\n")
    with pytest.raises(DataFileError) as info:
        read_molecules(p, id_column="cid")
    msg = str(info.value)
    assert "'cid'" in msg and "id, smiles" in msg and str(p) in msg and "\n" not in msg


# ------------------------------------------------------------------------------------- SDF
def _sdf_text(records: list[tuple[str, str, dict[str, str]]]) -> str:
    sio = io.StringIO()
    w = Chem.SDWriter(sio)
    for smiles, title, props in records:
        mol = Chem.MolFromSmiles(smiles) if smiles else Chem.Mol()
        mol.SetProp("_Name", title)
        for k, v in props.items():
            mol.SetProp(k, v)
        w.write(mol)
    w.close()
    return sio.getvalue()


def test_sdf_titles_and_properties(tmp_path):
    text = _sdf_text([("OCC", "ethanol", {"CAS": "64-17-5", "mw": "46.07"}),
                      ("c1ccccc1", "benzene", {"mw": "78.11", "note": "aromatic"})])
    broken = "broken\n  RDKit\n\n  x  y  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n"
    text += broken + _sdf_text([("", "nothing", {"CAS": "none"})])
    p = tmp_path / "a.sdf"
    p.write_text(text)
    raw = read_molecules(p)
    assert raw.texts == ["CCO", "c1ccccc1", None, None]
    assert raw.lines == [1, 2, 3, 4]
    assert raw.ids == ["ethanol", "benzene", "broken", "nothing"]
    assert raw.columns == ["title", "CAS", "mw", "note"]
    assert raw.extra[0] == {"title": "ethanol", "CAS": "64-17-5", "mw": "46.07", "note": ""}
    assert raw.extra[1] == {"title": "benzene", "CAS": "", "mw": "78.11", "note": "aromatic"}
    assert raw.problem(2) == ("invalid", "unparsable SDF record")
    assert raw.problem(3)[0] == "empty"
    assert read_molecules(p, id_column="CAS").ids == ["64-17-5", "", "", "none"]
    with pytest.raises(DataFileError, match="CAS, mw, note"):
        read_molecules(p, id_column="inchikey")


# ---------------------------------------------------------------------------------- writing
ROWS = [{"smiles": "CCO", "id": "m1", "line": 2, "score": 0.5, "status": "ok"},
        {"smiles": None, "id": "m2", "line": 3, "score": None, "status": "empty"},
        {"smiles": "c1ccccc1", "id": "", "line": 4, "score": 1.25, "status": "ok"},
        {"smiles": "", "id": "", "line": 5, "score": None, "status": "invalid"}]
COLUMNS = ["line", "id", "smiles", "score", "status"]


def _write(path, rows=ROWS, columns=COLUMNS) -> None:
    w = TableWriter(path, columns)
    w.write_rows(rows)
    w.close()


def test_csv_output_has_unix_line_endings(tmp_path, capsys):
    path = tmp_path / "t.csv"
    _write(path)
    assert b"\r\n" not in path.read_bytes()
    with path.open(newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["id"] for r in got] == ["m1", "m2", "", ""]
    _write(None)
    out = capsys.readouterr().out
    assert "\r" not in out and len(out.splitlines()) == 1 + len(ROWS)


def test_metrics_csv_has_unix_line_endings(tmp_path):
    from molvae.train import MetricsLog
    m = MetricsLog(tmp_path, None)
    m.write({"step": 1, "epoch": 0, "split": "train", "loss": 1.5})
    m.close()
    assert b"\r\n" not in (tmp_path / "metrics.csv").read_bytes()


def test_smi_output_is_smiles_tab_name(tmp_path):
    path = tmp_path / "t.smi"
    _write(path)
    assert path.read_text().splitlines() == ["CCO\tm1", "\tm2", "c1ccccc1\t4", "\t5"]
    raw = read_molecules(path)  # row i is still record i
    assert len(raw) == len(ROWS)
    assert raw.texts == ["CCO", None, "c1ccccc1", None]
    assert raw.ids == ["m1", "m2", "4", "5"]
    assert [_status(raw, i) for i in range(len(raw))] == ["ok", "empty", "ok", "empty"]


def test_smi_output_names(tmp_path):
    path = tmp_path / "n.smi"
    rows = [{"smiles": "CCO", "name": "ethanol", "step": 0}, {"smiles": "CCN", "step": 1},
            {"smiles": "C C", "name": "tab\there"}]
    _write(path, rows, ["smiles", "name", "step"])
    assert path.read_text().splitlines() == ["CCO\tethanol", "CCN\t1", "C C\ttab here"]
    plain = tmp_path / "p.smi"
    _write(plain, [{"smiles": "CCO"}, {"smiles": None}], ["smiles"])
    assert plain.read_text() == "CCO\n\n"
    assert len(read_molecules(plain)) == 2


def test_sdf_output_has_title_smiles_and_every_column(tmp_path):
    path = tmp_path / "t.sdf"
    _write(path)
    mols = list(Chem.SDMolSupplier(str(path)))
    assert len(mols) == len(ROWS)
    assert [m.GetProp("_Name") for m in mols] == ["m1", "m2", "#3", "#4"]
    assert [m.GetProp("SMILES") for m in mols] == ["CCO", "", "c1ccccc1", ""]
    for m, row in zip(mols, ROWS):
        for c in COLUMNS:
            if c != "smiles":
                assert m.GetProp(c) == ("" if row[c] is None else str(row[c]))
    assert [m.GetNumAtoms() for m in mols] == [3, 0, 6, 0]
    raw = read_molecules(path)
    assert raw.ids == ["m1", "m2", "#3", "#4"]
    assert raw.texts == ["CCO", None, "c1ccccc1", None]
    assert raw.columns == ["title", "SMILES", "line", "id", "score", "status"]


def test_status_table_lines_up_with_npy(tmp_path):
    raw = read_molecules(_write_lines(tmp_path / "in.smi", [t for t, _, _ in SMI_LINES]))
    z = np.zeros((len(raw), 4), dtype=np.float32)
    npy = tmp_path / "z.npy"
    np.save(npy, z)
    rows = [{"line": raw.lines[i], "id": raw.ids[i], "input": raw.texts[i],
             "status": _status(raw, i), "reason": (raw.problem(i) or ("", ""))[1]}
            for i in range(len(raw))]
    path = write_status_table(npy, rows)
    assert path == status_table_path(npy) == tmp_path / "z.status.csv"
    assert b"\r\n" not in path.read_bytes()
    with path.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == np.load(npy).shape[0] == 18
    assert list(table[0]) == ["line", "id", "input", "status", "reason"]
    assert table[4]["status"] == "empty" and table[4]["reason"] == "comment line"
