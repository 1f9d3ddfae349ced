"""`molvae sample | encode | interpolate | plot`, run in-process through molvae.cli.main."""

from __future__ import annotations

import csv
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import molvae
from molvae.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BUNDLED = Path(molvae.__file__).resolve().parent / "pretrained" / "moses_default.safetensors"
# line -> (text, status) of the encode input file
ENCODE_INPUT = [("CCO", "ok"), ("xyz", "invalid"), ("c1ccccc1", "ok"), ("C*", "unsupported"),
                ("C[Si](C)(C)C", "unknown_token"), ("CC(=O)Nc1ccc(O)cc1", "ok")]


@pytest.fixture(scope="module")
def run_dir(trained_run) -> str:
    out, _ = trained_run
    return str(out)


@pytest.fixture
def smi_file(tmp_path) -> Path:
    path = tmp_path / "in.smi"
    path.write_text("".join(text + "\n" for text, _ in ENCODE_INPUT))
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, cap.err


def _error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"molvae {command}: error: "), lines[0]
    return lines[0]


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


# ----------------------------------------------------------------------------------- sample
def test_sample_to_stdout(capsys, run_dir):
    code, out, err = _run(capsys, "-q", "sample", "--model", run_dir, "-n", 5, "--seed", 1)
    assert code == 0, err
    assert out.splitlines()[0] == "smiles,index,status"
    rows = _csv_rows(out)
    assert len(rows) == 5
    assert [r["index"] for r in rows] == ["0", "1", "2", "3", "4"]
    for r in rows:
        assert r["status"] in ("ok", "invalid")
        assert (r["status"] == "ok") == bool(r["smiles"])
    # the same seed repeats; the library gives the same molecules
    assert _run(capsys, "-q", "sample", "--model", run_dir, "-n", 5, "--seed", 1)[1] == out
    lib = molvae.sample(molvae.load(run_dir), 5, seed=1)
    assert [r["smiles"] or None for r in rows] == lib


@pytest.mark.parametrize("suffix", [".csv", ".smi", ".sdf"])
def test_sample_to_file(capsys, tmp_path, run_dir, suffix):
    path = tmp_path / f"out{suffix}"
    code, out, err = _run(capsys, "sample", "--model", run_dir, "-n", 7, "-o", path)
    assert code == 0, err
    assert out == ""  # results go to the file, logs and progress to stderr
    text = path.read_text()
    if suffix == ".csv":
        assert len(_csv_rows(text)) == 7
    elif suffix == ".smi":  # SMILES<TAB>index, no header
        lines = text.splitlines()
        assert len(lines) == 7
        assert [ln.split("\t")[1] for ln in lines] == [str(i) for i in range(7)]
    else:
        assert text.count("$$$$") == 7


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_sample_with_image(capsys, tmp_path, run_dir, suffix):
    image = tmp_path / f"grid{suffix}"
    code, out, err = _run(capsys, "-q", "sample", "--model", run_dir, "-n", 6,
                          "--image", image)
    assert code == 0, err
    assert len(_csv_rows(out)) == 6
    if suffix == ".png":
        assert image.read_bytes()[:8] == PNG_MAGIC
    else:
        assert ET.parse(image).getroot().tag.endswith("svg")


@pytest.mark.parametrize(("args", "words"),
                         [(["-n", "0"], ["-n"]),
                          (["-n", "5", "--temperature", "-1"], ["--temperature"]),
                          (["-n", "5", "--image", "x.jpg"], ["x.jpg"]),
                          (["-n", "5", "-o", "out.xlsx"], ["out.xlsx"])])
def test_sample_usage_errors(capsys, tmp_path, run_dir, args, words):
    args = [str(tmp_path / a) if a.endswith((".jpg", ".xlsx")) else a for a in args]
    code, out, err = _run(capsys, "sample", "--model", run_dir, *args)
    assert code == 2
    line = _error_line(err, "sample")
    for w in words:
        assert w in line
    assert not (tmp_path / "x.jpg").exists()


def test_sample_nan_temperature_is_a_usage_error(capsys, run_dir):
    """--temperature nan slips past the `< 0` check and ends as an internal error (exit 1)."""
    code, _, err = _run(capsys, "sample", "--model", run_dir, "-n", 3, "--temperature", "nan")
    assert code == 2, err
    assert "--temperature" in _error_line(err, "sample")


def test_sample_zero_batch_size_is_a_usage_error(capsys, run_dir):
    code, _, err = _run(capsys, "sample", "--model", run_dir, "-n", 3, "--batch-size", 0)
    assert code == 2, err
    assert "--batch-size" in _error_line(err, "sample")


def test_sample_bundled_model(capsys):
    """Correct whether or not the bundled model has been trained and shipped yet."""
    code, out, err = _run(capsys, "-q", "sample", "-n", 3)
    if BUNDLED.exists():
        assert code == 0, err
        assert len(_csv_rows(out)) == 3
    else:
        assert code == 2
        assert "--model" in _error_line(err, "sample")


def test_corrupt_model_file(capsys, tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\x00" * 40)
    code, _, err = _run(capsys, "sample", "--model", bad, "-n", 3)
    assert code == 2
    assert str(bad) in _error_line(err, "sample")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"abc")
    code, _, err = _run(capsys, "encode", "x.smi", "--model", junk)
    assert code == 2
    _error_line(err, "encode")
    code, _, err = _run(capsys, "sample", "--model", tmp_path / "missing.safetensors")
    assert code == 2
    assert "not found" in _error_line(err, "sample")


# ----------------------------------------------------------------------------------- encode
def test_encode_to_npy(capsys, tmp_path, run_dir, smi_file):
    out = tmp_path / "z.npy"
    code, _, err = _run(capsys, "-q", "encode", smi_file, "--model", run_dir, "-o", out)
    assert code == 0, err
    z = np.load(out)
    latent = molvae.load(run_dir).config.latent_dim
    assert z.shape == (len(ENCODE_INPUT), latent)
    bad = [status != "ok" for _, status in ENCODE_INPUT]
    assert np.isnan(z).all(1).tolist() == bad
    assert np.isfinite(z[~np.array(bad)]).all()
    want = molvae.encode(molvae.load(run_dir), [t for t, s in ENCODE_INPUT if s == "ok"])
    np.testing.assert_allclose(z[~np.array(bad)], want.numpy(), atol=1e-6)


def test_encode_to_stdout(capsys, run_dir, smi_file):
    code, out, err = _run(capsys, "-q", "encode", smi_file, "--model", run_dir)
    assert code == 0, err
    rows = _csv_rows(out)
    assert len(rows) == len(ENCODE_INPUT)
    latent = molvae.load(run_dir).config.latent_dim
    from molvae.cli_inspect import CHECK_COLUMNS
    assert list(rows[0])[:3 + len(CHECK_COLUMNS)] == ["line", "id", "input", *CHECK_COLUMNS]
    assert [f"z{j}" for j in range(latent)] == list(rows[0])[3 + len(CHECK_COLUMNS):]
    for i, (row, (text, status)) in enumerate(zip(rows, ENCODE_INPUT)):
        assert row["line"] == str(i + 1)
        assert row["input"] == text
        assert row["status"] == status
        assert bool(row["reason"]) == (status != "ok")
        assert all(bool(row[f"z{j}"]) == (status == "ok") for j in range(latent))
    assert "[Si]" in rows[4]["reason"]


def test_encode_with_elbo(capsys, run_dir, smi_file):
    code, out, err = _run(capsys, "-q", "encode", smi_file, "--model", run_dir, "--elbo",
                          "--elbo-samples", 2)
    assert code == 0, err
    rows = _csv_rows(out)
    assert len(rows) == len(ENCODE_INPUT)
    for row, (_, status) in zip(rows, ENCODE_INPUT):
        for k in ("neg_elbo", "recon", "kl"):
            assert k in row
            if status == "ok":
                assert float(row[k]) > 0
            else:
                assert row[k] == ""
        if status == "ok":
            assert float(row["neg_elbo"]) == pytest.approx(float(row["recon"]) + float(row["kl"]),
                                                           abs=2e-4)


@pytest.mark.parametrize("elbo_samples", [2, 8])  # 8: the domain record's count, reused
def test_encode_numbers_are_the_api_numbers(capsys, tmp_path, run_dir, smi_file, elbo_samples):
    """The CLI standardizes once and reuses it: its sampled latents and -ELBO columns are what
    molvae.encode and molvae.elbo give for the same seed."""
    out = tmp_path / "z.npy"
    code, _, err = _run(capsys, "-q", "encode", smi_file, "--model", run_dir, "-o", out,
                        "--sample", "--elbo", "--elbo-samples", elbo_samples, "--seed", 5)
    assert code == 0, err
    model = molvae.load(run_dir)
    texts = [t for t, _ in ENCODE_INPUT]
    want = molvae.encode(model, texts, errors="nan", sample_posterior=True, seed=5).numpy()
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)
    parts = molvae.elbo(model, texts, n_samples=elbo_samples, seed=5)
    table = list(csv.DictReader((tmp_path / "z.status.csv").open()))
    for row, v in zip(table, parts["neg_elbo"]):
        assert (row["neg_elbo"] == "") if np.isnan(v) else float(row["neg_elbo"]) == (
            pytest.approx(v, abs=1e-4))


def test_encode_csv_file_with_column(capsys, tmp_path, run_dir):
    path = tmp_path / "mols.csv"
    path.write_text("id,structure\n1,CCO\n2,\n3,c1ccccc1\n")
    code, out, err = _run(capsys, "-q", "encode", path, "--model", run_dir,
                          "--smiles-column", "structure")
    assert code == 0, err
    rows = _csv_rows(out)
    assert [r["status"] for r in rows] == ["ok", "empty", "ok"]
    assert [r["line"] for r in rows] == ["2", "3", "4"]
    assert [r["id"] for r in rows] == ["1", "2", "3"]  # the id column is detected


def test_encode_npy_has_a_row_table_with_elbo(capsys, tmp_path, run_dir, smi_file):
    out = tmp_path / "z.npy"
    code, _, err = _run(capsys, "-q", "encode", smi_file, "--model", run_dir, "-o", out,
                        "--elbo", "--elbo-samples", 2)
    assert code == 0, err
    z = np.load(out)
    table = list(csv.DictReader((tmp_path / "z.status.csv").open()))
    assert len(table) == len(z) == len(ENCODE_INPUT)
    for row, zi, (text, status) in zip(table, z, ENCODE_INPUT):
        assert (row["input"], row["status"]) == (text, status)
        assert np.isnan(zi).all() == (status != "ok")
        assert bool(row["neg_elbo"]) == (status == "ok")


def test_encode_zero_elbo_samples_is_a_usage_error(capsys, run_dir, smi_file):
    """elbo()'s ValueError for n_samples=0 is not caught: exit 1, "internal error"."""
    code, _, err = _run(capsys, "-q", "encode", smi_file, "--model", run_dir, "--elbo",
                        "--elbo-samples", 0)
    assert code == 2, err
    assert "elbo-samples" in _error_line(err, "encode")


@pytest.mark.parametrize("case", ["missing", "no_column", "bad_output"])
def test_encode_bad_files(capsys, tmp_path, run_dir, smi_file, case):
    if case == "missing":
        args = [tmp_path / "nope.smi"]
        word = "not found"
    elif case == "no_column":
        path = tmp_path / "mols.csv"
        path.write_text("id,structure\n1,CCO\n")
        args = [path]
        word = "--smiles-column"
    else:
        args = [smi_file, "-o", tmp_path / "z.txt"]
        word = "z.txt"
    code, out, err = _run(capsys, "-q", "encode", *args, "--model", run_dir)
    assert code == 2
    assert word in _error_line(err, "encode")


# ------------------------------------------------------------------------------ interpolate
def test_interpolate_to_files(capsys, tmp_path, run_dir):
    table, image = tmp_path / "p.csv", tmp_path / "p.svg"
    code, out, err = _run(capsys, "-q", "interpolate", "CCO", "c1ccccc1", "--steps", 4,
                          "--model", run_dir, "-o", table, "--image", image)
    assert code == 0, err
    rows = _csv_rows(table.read_text())
    assert len(rows) == 4
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    assert float(rows[0]["t"]) == 0.0 and float(rows[-1]["t"]) == 1.0
    lib = molvae.interpolate(molvae.load(run_dir), "CCO", "c1ccccc1", steps=4)
    assert [r["smiles"] or None for r in rows] == lib
    assert ET.parse(image).getroot().tag.endswith("svg")


def test_interpolate_linear_to_stdout(capsys, run_dir):
    code, out, err = _run(capsys, "-q", "interpolate", "CCO", "CCN", "--steps", 3,
                          "--method", "linear", "--model", run_dir)
    assert code == 0, err
    assert len(_csv_rows(out)) == 3


def test_interpolate_invalid_smiles(capsys, run_dir):
    code, out, err = _run(capsys, "interpolate", "CCO", "xyz", "--model", run_dir)
    assert code == 2
    line = _error_line(err, "interpolate")
    assert "xyz" in line
    assert out == ""


@pytest.mark.parametrize(("args", "word"), [(["--steps", "1"], "steps"),
                                            (["--image", "p.jpg"], "p.jpg")])
def test_interpolate_usage_errors(capsys, run_dir, args, word):
    code, _, err = _run(capsys, "interpolate", "CCO", "CCN", "--model", run_dir, *args)
    assert code == 2
    assert word in _error_line(err, "interpolate")


# ------------------------------------------------------------------------------------- plot
def test_plot_run_folder(capsys, tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)  # the shared run is read-only
    code, _, err = _run(capsys, "-q", "plot", run)
    assert code == 0, err
    assert (run / "training_curves.png").read_bytes()[:8] == PNG_MAGIC
    svg = tmp_path / "curves.svg"
    code, _, err = _run(capsys, "-q", "plot", run, "-o", svg)
    assert code == 0, err
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_plot_without_metrics(capsys, tmp_path):
    code, _, err = _run(capsys, "plot", tmp_path)
    assert code == 2
    assert "metrics.csv" in _error_line(err, "plot")


def test_evaluate_cli_writes_json_and_plot(tmp_path, capsys):
    """`molvae evaluate` on a samples file with small custom reference sets (hermetic)."""
    import json

    from molvae.cli import main

    refs = ["CCOc1ccccc1C(=O)N", "c1ccc2[nH]ccc2c1", "CC(=O)Nc1ccc(O)cc1", "O=C(O)c1ccccc1O",
            "CN1CCC[C@H]1c1cccnc1", "Cc1ccccc1NC(=O)CN(C)C", "COc1ccc(CCN)cc1",
            "c1ccc(-c2ccccn2)cc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "O=C1CCCN1"] * 3
    ref = tmp_path / "ref.smi"
    ref.write_text("\n".join(refs) + "\n")
    samples = tmp_path / "samples.csv"
    samples.write_text("smiles,index,status\n" + "".join(
        f"{s},{i},ok\n" for i, s in enumerate(refs[:10])) + ",10,invalid\n")
    out = tmp_path / "m.json"
    plot = tmp_path / "props.png"
    rc = main(["-q", "evaluate", str(samples), "--test", str(ref), "--test-scaffolds", str(ref),
               "--train", str(ref), "-o", str(out), "--plot", str(plot)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert abs(res["valid"] - 10 / 11) < 1e-9
    assert res["Novelty"] == 0.0  # every valid sample is in the reference set
    for key in ("FCD/Test", "SNN/Test", "Frag/Test", "IntDiv", "Filters", "logP", "SA", "QED",
                "weight"):
        assert key in res
    assert "FCD/Test" in capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_cli_needs_samples_or_model(capsys):
    from molvae.cli import main

    assert main(["evaluate"]) == 2
    assert "samples" in capsys.readouterr().err


def test_latent_map_cli_draws_encoded_molecules(capsys, caplog, tmp_path, run_dir):
    mols = tmp_path / "mols.smi"
    mols.write_text("\n".join(["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "CCN", "xyz",
                               "OCCO", "c1ccncc1"]) + "\n")
    png = tmp_path / "map.png"
    code, _, err = _run(capsys, "latent-map", mols, "--model", run_dir, "-o", png,
                        "--property", "logP")
    assert code == 0, err
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "1 of 7 molecules could not be encoded" in caplog.text
    svg = tmp_path / "map.svg"
    code, _, err = _run(capsys, "-q", "latent-map", mols, "--model", run_dir, "-o", svg, "-n", 4)
    assert code == 0, err
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_latent_map_cli_bad_input(capsys, tmp_path, run_dir):
    mols = tmp_path / "mols.smi"
    mols.write_text("CCO\nxyz\n")
    code, _, err = _run(capsys, "latent-map", mols, "--model", run_dir, "-o", tmp_path / "m.png")
    assert code == 2
    assert "need at least 3" in _error_line(err, "latent-map")
    code, _, err = _run(capsys, "latent-map", mols, "--model", run_dir, "-n", 2)
    assert code == 2
    assert "at least 3 molecules" in _error_line(err, "latent-map")


@pytest.mark.parametrize("flag, grammar", [("--grammar-mask", True), ("--no-grammar-mask", False)])
def test_sample_grammar_mask_flag(capsys, flag, grammar):
    """--grammar-mask / --no-grammar-mask override the model's sampling setting."""
    code, out, err = _run(capsys, "-q", "sample", "-n", 4, "--seed", 2, "--temperature", 1.0,
                          flag)
    assert code == 0, err
    lib = molvae.sample(molvae.load(), 4, seed=2, temperature=1.0, grammar=grammar)
    assert [r["smiles"] for r in _csv_rows(out)] == lib


def test_sample_top_p_flag(capsys, caplog):
    """--top-p overrides the model's nucleus setting; the log line names it."""
    code, out, err = _run(capsys, "sample", "-n", 4, "--seed", 2, "--temperature", 1.0,
                          "--top-p", 0.6, "--no-grammar-mask")
    assert code == 0, err
    lib = molvae.sample(molvae.load(), 4, seed=2, temperature=1.0, grammar=False, top_p=0.6)
    assert [r["smiles"] for r in _csv_rows(out)] == lib
    assert "top-p 0.6" in err + caplog.text
    code, _, err = _run(capsys, "sample", "-n", 4, "--top-p", 0)
    assert code == 2
    assert "--top-p must be a number in (0, 1], got 0" in _error_line(err, "sample")
