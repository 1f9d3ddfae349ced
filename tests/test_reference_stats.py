"""The MOSES reference statistics shipped in molvae/reference/ and evaluate()'s use of them.

CPU only and hermetic: the comparisons build tiny reference files in tmp_path with the functions
of scripts/make_reference_stats.py and point moses_files.REFERENCE_DIR at them.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script, read_moses

from molvae import metrics as M
from molvae import moses_files
from molvae._features import _hashed_novelty, _smiles_hashes

SHIPPED = Path(M.__file__).resolve().parent / "reference"
MOSES = Path(__file__).resolve().parents[1] / "data" / "moses"


def _write_split(folder: Path, name: str, smiles: list[str]) -> None:
    with gzip.open(folder / f"{name}.csv.gz", "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["SMILES", "SPLIT"])
        writer.writerows([s, name] for s in smiles)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny MOSES-like splits, their shipped-style files, and samples partly from train."""
    mols = read_moses(1400)
    sets = {"test": mols[:150], "test_scaffolds": mols[150:300], "train": mols[300:1200]}
    moses = tmp_path_factory.mktemp("moses")
    for name, smiles in sets.items():
        _write_split(moses, name, smiles)
    out = tmp_path_factory.mktemp("reference")
    script = load_script("make_reference_stats")
    record = script.build(moses, out, n_jobs=1, cache_dir=False)
    samples = mols[1200:1320] + sets["train"][:40] + [None, "C1CC", "CCO"]
    return {"sets": sets, "out": out, "record": record, "samples": samples}


@pytest.fixture(scope="module")
def computed(tiny) -> dict[str, float]:
    sets = tiny["sets"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unique@1000 with fewer samples
        return M.evaluate(tiny["samples"], test=sets["test"], test_scaffolds=sets["test_scaffolds"],
                          train=sets["train"], ks=(100,), n_jobs=1, cache_dir=False)


def _shipped_only(monkeypatch: pytest.MonkeyPatch, tiny: dict, tmp_path: Path) -> None:
    monkeypatch.setattr(moses_files, "REFERENCE_DIR", tiny["out"])
    monkeypatch.setattr(moses_files, "MOSES_DIR", tmp_path)  # as in a wheel install: no data/moses

    def no_reference_chemnet(*args, **kwargs):
        raise AssertionError("ChemNet ran over a shipped reference set")

    monkeypatch.setattr(M, "_add_reference_fcd", no_reference_chemnet)
    monkeypatch.setattr(M, "_canonical_set", no_reference_chemnet)


# --------------------------------------------------------------------------- the shipped files


def test_shipped_files_have_the_expected_shapes_and_provenance():
    provenance = SHIPPED / "provenance.json"
    if not provenance.is_file():
        pytest.skip("no shipped reference statistics in this install")
    record = json.loads(provenance.read_text())
    assert record["format"] == 1 and record["rdkit"] and record["fcd_dtype"] == "float64"
    assert record["fingerprint"] == {"kind": "Morgan", "radius": 2, "bits": 1024}
    assert record["files"], "provenance lists no file"
    for name, entry in record["files"].items():
        path = SHIPPED / name
        assert path.stat().st_size == entry["bytes"], name
        assert len(entry["sha256"]) == 64
        source = MOSES / entry["source"]
        if source.is_file():  # a checkout: the files were made from the data shipped with it
            script = load_script("make_reference_stats")
            assert script.sha256_file(source) == entry["sha256"], name
        split = name.split(".")[0].removesuffix("_hashes")
        stats = M.shipped_reference(split)
        if split == "train":
            hashes = stats["hashes"]
            assert hashes.dtype == np.uint64 and len(hashes) == entry["distinct"]
            assert np.all(hashes[1:] > hashes[:-1])  # sorted, distinct
            continue
        assert set(moses_files.SHIPPED_KEYS) <= set(stats)
        assert stats["fcd_mu"].shape == (512,) and stats["fcd_mu"].dtype == np.float64
        sigma = stats["fcd_sigma"]
        assert sigma.shape == (512, 512) and np.allclose(sigma, sigma.T)
        assert stats["fps"].shape == (entry["distinct_fingerprints"], 128)
        assert stats["fps"].dtype == np.uint8
        assert len(np.unique(stats["fps"], axis=0)) == len(stats["fps"])
        for prop in M.PROPERTY_NAMES:
            assert stats[prop].shape == (entry["valid"],) and stats[prop].dtype == np.float64
        assert len(stats["frag_keys"]) == len(stats["frag_counts"]) == entry["fragments"]
        assert len(stats["scaf_keys"]) == len(stats["scaf_counts"]) == entry["scaffolds"]
        assert entry["valid"] <= entry["rows"]


def test_unknown_or_missing_split_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown MOSES split"):
        M.shipped_reference("valid")
    monkeypatch.setattr(moses_files, "REFERENCE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"test_scaffolds\.npz"):
        M.shipped_reference("test_scaffolds")


# --------------------------------------------------------------------------- evaluate


def test_build_writes_every_file_with_provenance(tiny):
    files = tiny["record"]["files"]
    assert sorted(files) == ["test.npz", "test_scaffolds.npz", "train_hashes.npy"]
    assert files["train_hashes.npy"]["distinct"] == len(set(tiny["sets"]["train"]))
    assert files["test.npz"]["valid"] == 150
    assert json.loads((tiny["out"] / "provenance.json").read_text()) == tiny["record"]


def test_evaluate_with_shipped_stats_equals_the_computing_path(tiny, computed, monkeypatch,
                                                               tmp_path):
    _shipped_only(monkeypatch, tiny, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = M.evaluate(tiny["samples"], ks=(100,), n_jobs=1, cache_dir=False)
    assert list(got) == list(computed)
    for key, want in computed.items():
        assert not math.isnan(want), key
        # ChemNet's float32 activations of the samples vary in the last bits from run to run
        rel = 1e-6 if key.startswith("FCD") else 1e-12
        assert got[key] == pytest.approx(want, rel=rel, abs=1e-12), key
    assert 0 < got["Novelty"] < 1  # 40 of the samples are training molecules


def test_explicit_references_mix_with_shipped_ones(tiny, computed, monkeypatch, tmp_path):
    monkeypatch.setattr(moses_files, "REFERENCE_DIR", tiny["out"])
    monkeypatch.setattr(moses_files, "MOSES_DIR", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = M.evaluate(tiny["samples"], test_scaffolds=tiny["sets"]["test_scaffolds"],
                         train=tiny["sets"]["train"], ks=(100,), n_jobs=1, cache_dir=False)
    assert got == pytest.approx(computed, rel=1e-6)


def test_a_missing_shipped_file_names_itself(tiny, monkeypatch, tmp_path):
    partial = tmp_path / "reference"
    partial.mkdir()
    for name in ("test.npz", "test_scaffolds.npz"):
        (partial / name).write_bytes((tiny["out"] / name).read_bytes())
    monkeypatch.setattr(moses_files, "REFERENCE_DIR", partial)
    monkeypatch.setattr(moses_files, "MOSES_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"MOSES train set not found.*train_hashes\.npy"):
        M.evaluate(["CCO", "CCN"], n_jobs=1, cache_dir=False)


def test_reference_properties_are_the_shipped_arrays(tiny, monkeypatch, tmp_path):
    _shipped_only(monkeypatch, tiny, tmp_path)
    got = M.reference_properties("test")
    want = M.molecule_properties(tiny["sets"]["test"], n_jobs=1)
    for name in M.PROPERTY_NAMES:
        np.testing.assert_array_equal(got[name], want[name])


# --------------------------------------------------------------------------- novelty by hash


def test_hashed_novelty_agrees_with_the_set_based_one():
    rng = np.random.default_rng(0)
    train = {f"C{'C' * int(n)}O" for n in rng.integers(0, 400, 300)} | {"c1ccccc1", "CCN"}
    hashes = np.unique(_smiles_hashes(train))
    assert len(hashes) == len(train)
    for size in (1, 5, 50, 200):
        pool = [f"C{'C' * int(n)}O" for n in rng.integers(0, 600, size)] + ["c1ccccc1"]
        sample = set(pool)
        assert _hashed_novelty(sample, hashes) == M._novelty(sample, train)
    assert math.isnan(_hashed_novelty(set(), hashes))
    assert _hashed_novelty({"CCO"}, np.zeros(0, np.uint64)) == 1.0
    assert _smiles_hashes(["CCO", "CCO"]).tolist()[0] == _smiles_hashes(["CCO"]).tolist()[0]
