"""scripts/benchmark_moses.py: its measurement on a tiny model with tiny reference sets, its
markdown table and the README block it rewrites."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

import molvae

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_moses",
                                                  ROOT / "scripts" / "benchmark_moses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFS = ["CCOc1ccccc1C(=O)N", "c1ccc2[nH]ccc2c1", "CC(=O)Nc1ccc(O)cc1", "O=C(O)c1ccccc1O",
        "CN1CCC[C@H]1c1cccnc1", "Cc1ccccc1NC(=O)CN(C)C", "COc1ccc(CCN)cc1",
        "c1ccc(-c2ccccn2)cc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "O=C1CCCN1"]


def test_baselines_have_one_value_per_column(bench):
    for name, values in bench.BASELINES.items():
        assert len(values) == len(bench.COLUMNS), name
        assert all(mean >= 0 and std >= 0 for mean, std in values), name
    # spot checks against the MOSES README
    col = bench.COLUMNS.index("FCD/Test")
    assert bench.BASELINES["VAE"][col] == (0.099, 0.0125)
    assert bench.BASELINES["CharRNN"][bench.COLUMNS.index("Novelty")][0] == 0.8419


@pytest.mark.filterwarnings("ignore:unique@")
def test_measure_on_tiny_references(bench, monkeypatch, tmp_path):
    """The bundled model (the tiny test run's acceptance is too low for consistent sampling)
    against tiny reference sets."""
    sets = {"test": REFS * 3, "test_scaffolds": REFS[::-1] * 3, "train": REFS[:5]}
    monkeypatch.setattr(bench, "load_moses", lambda split: sets[split])
    model = molvae.load()
    png = tmp_path / "props.png"
    res = bench.measure(model, n=40, seed=0, recon_n=10, au_n=15, progress=False, picture=png,
                        shipped=False)
    m = res["metrics"]
    for key in bench.COLUMNS:
        if key != "unique@10000":  # fewer than 10,000 samples: MOSES warns and uses all
            assert key in m
    assert 0 <= m["valid"] <= 1 and res["n_samples"] == 40
    assert 0 <= res["reconstruction"] <= 1 and res["reconstruction_n"] == 10
    assert 0 <= res["active_units"] <= model.config.latent_dim
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["model"]["latent_dim"] == model.config.latent_dim
    # the same seed gives the same numbers
    again = bench.measure(model, n=40, seed=0, recon_n=10, au_n=15, progress=False,
                          shipped=False)
    assert again["metrics"]["FCD/Test"] == m["FCD/Test"] or math.isnan(m["FCD/Test"])
    assert again["reconstruction"] == res["reconstruction"]
    # the grammar-consistent row: every kept sample valid, and the acceptance rate of the draws
    c = res["consistent"]
    assert c["metrics"]["valid"] == 1.0 and 0 < c["acceptance"] <= 1
    assert c["drawn"] >= 40 and math.isclose(c["acceptance"], 40 / c["drawn"])
    assert again["consistent"]["drawn"] == c["drawn"]
    only = bench.measure(model, n=10, seed=0, recon_n=5, au_n=5, progress=False, shipped=False,
                         kinds=("raw",))
    assert "consistent" not in only and "metrics" in only


def _result(bench) -> dict:
    metrics = {c: 0.5 for c in bench.COLUMNS}
    metrics.update({"FCD/Test": 1.25, "logP": 0.1, "SA": 0.2, "QED": 0.03, "weight": float("nan")})
    return {"metrics": metrics, "n_samples": 30000, "seed": 0, "temperature": 1.0,
            "reconstruction": 0.812, "reconstruction_n": 1000, "active_units": 40,
            "active_units_n": 5000,
            "model": {"file": "m.safetensors", "step": 7, "prior": "gmm", "components": 16,
                      "parameters": 1_600_000, "latent_dim": 64},
            "hardware": {"cpu": "cpu", "cores": 2, "torch": "x"}, "wall_s": {}}


def test_markdown_has_every_baseline_and_the_model(bench):
    md = bench.markdown(_result(bench), "molvae (test)")
    lines = md.splitlines()
    header = lines[0].split("|")[1:-1]
    assert len(header) == len(bench.COLUMNS) + 1
    for name in bench.BASELINES:
        row = next(ln for ln in lines if ln.startswith(f"| {name} |") or name in ln[:12])
        assert len(row.split("|")[1:-1]) == len(header)
    model_row = next(ln for ln in lines if ln.startswith("| **molvae (test), raw samples** |"))
    assert "**1.2500**" in model_row
    assert "0.812" in md and "40 of 64" in md and "nan" in md
    assert "gmm (16 components)" in md and "30,000 samples" in md
    assert "draws scaled" not in md  # an unscaled density (and older records) say nothing
    scaled = _result(bench)
    scaled["model"]["scale"] = 0.9
    assert "gmm (16 components), draws scaled by 0.9)" in bench.markdown(scaled, "molvae (test)")
    assert "grammar-consistent" not in md  # no consistent measurement: no row for it
    res = _result(bench)
    res["consistent"] = {"metrics": {**res["metrics"], "FCD/Test": 0.75, "valid": 1.0},
                         "acceptance": 0.25, "drawn": 120_000, "accepted_mol_per_s": 150.0}
    md = bench.markdown(res, "molvae (test)")
    row = next(ln for ln in md.splitlines()
               if ln.startswith("| **molvae (test), grammar-consistent** |"))
    assert "**0.7500**" in row and "**1.0000**" in row
    assert "0.250 (30,000 of 120,000 draws; 150 accepted molecules/s)" in md


def test_update_readme_replaces_only_the_block(bench, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.START}\nold table\n{bench.END}\nafter\n")
    bench.update_readme(readme, "| new |\n")
    assert readme.read_text() == f"intro\n{bench.START}\n| new |\n{bench.END}\nafter\n"
    bench.update_readme(readme, "| newer \\1 |\n")  # backslashes are kept literally
    assert "| newer \\1 |" in readme.read_text() and "| new |" not in readme.read_text()
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    with pytest.raises(SystemExit, match="no .* block"):
        bench.update_readme(plain, "x")


def test_write_turns_nan_into_null(bench, tmp_path):
    res = _result(bench)
    bench.write(res, "md\n", tmp_path / "out" / "bench")
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert data["metrics"]["weight"] is None and data["metrics"]["FCD/Test"] == 1.25
    assert (tmp_path / "out" / "bench.md").read_text() == "md\n"
