"""`molvae optimize` end to end on the bundled model: files, scores, constraints, errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import molvae
from molvae.cli import main


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_optimize_writes_top_molecules_with_rdkit_scores(tmp_path, capsys):
    out, img, hist = tmp_path / "best.csv", tmp_path / "best.png", tmp_path / "history.csv"
    rc = main(["optimize", "qed", "--method", "evolution", "--budget", "40", "--seed", "0",
               "--top", "5", "-o", str(out), "--image", str(img), "--history", str(hist)])
    assert rc == 0
    rows = _rows(out)
    assert 1 <= len(rows) <= 5
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    recomputed = molvae.score([r["smiles"] for r in rows], "qed")
    assert np.allclose([float(r["qed"]) for r in rows], recomputed, atol=1e-5)
    assert [float(r["qed"]) for r in rows] == sorted((float(r["qed"]) for r in rows),
                                                    reverse=True)
    assert img.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(_rows(hist)) == 40
    assert "40 oracle calls" in capsys.readouterr().err  # the command's log line
    # every call says whether its decode was grammar-consistent
    assert {r["consistent"] for r in _rows(hist)} <= {"yes", "no"}
    assert {r["consistent"] for r in rows} <= {"yes", "no"}


def test_optimize_similarity_constraint_and_start(tmp_path):
    ref = "CC(=O)Nc1ccc(O)cc1"
    out = tmp_path / "best.csv"
    rc = main(["optimize", "logp", "--method", "evolution", "--budget", "30", "--start", ref,
               "--similarity-to", ref, "--min-similarity", "0.3", "-o", str(out), "-q"])
    assert rc == 0
    rows = _rows(out)
    assert rows and all(float(r["similarity"]) >= 0.3 for r in rows)


def test_optimize_sdf_output(tmp_path):
    from rdkit import Chem
    out = tmp_path / "best.sdf"
    assert main(["optimize", "heavy_atoms", "--method", "evolution", "--budget", "20",
                 "--top", "3", "-o", str(out), "-q"]) == 0
    mols = [m for m in Chem.SDMolSupplier(str(out)) if m is not None]
    assert 1 <= len(mols) <= 3


@pytest.mark.parametrize("argv, message", [
    (["optimize", "qde"], "did you mean 'qed'"),
    (["optimize", "qed", "--budget", "0"], "--budget must be >= 1"),
    (["optimize", "qed", "--min-similarity", "0.4"], "needs --similarity-to"),
    (["optimize", "qed", "-o", "best.txt"], "must end in .csv, .smi or .sdf"),
    (["optimize", "qed", "--image", "best.jpg"], "must end in .png or .svg"),
    (["optimize", "qed", "--similarity-to", "C1CC", "--min-similarity", "0.4"],
     "not a valid SMILES"),
    (["optimize", "qed", "--method", "cmaes", "--option", "sigmo0=1"], "did you mean 'sigma0'"),
    (["optimize", "qed", "--option", "population"], "write KEY=VALUE"),
])
def test_optimize_usage_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_optimize_inconsistent_invalid_spends_calls_only_on_consistent_decodes(tmp_path, capsys):
    hist = tmp_path / "history.csv"
    rc = main(["-q", "optimize", "qed", "--budget", "30", "--seed", "1", "--inconsistent",
               "invalid", "--history", str(hist), "-o", str(tmp_path / "best.csv")])
    assert rc == 0, capsys.readouterr().err
    rows = _rows(hist)
    assert len(rows) == 30 and {r["consistent"] for r in rows} == {"yes"}
    assert main(["optimize", "qed", "--inconsistent", "drop"]) == 2
    assert "--inconsistent" in capsys.readouterr().err


def test_option_values_are_read_as_json_where_they_parse():
    from molvae.cli_optimize import _options
    assert _options(["sigma0=1.0", "population=20", "reencode=false", "predictor=limo",
                     " starts = 5"]) == {"sigma0": 1.0, "population": 20, "reencode": False,
                                         "predictor": "limo", "starts": 5}
    assert _options(None) == {}
