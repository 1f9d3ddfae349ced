"""molvae.readers and molvae.data: reading molecule files, tokenizing, caching, splitting and
batching."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem

from molvae import data as D
from molvae.data import BucketBatcher, TokenData, tokenize
from molvae.readers import DataFileError, file_sha256, read_molecules
from molvae.vocab import EOS, PAD, Vocab


def _gzip(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def _assert_same_tokens(a: TokenData, b: TokenData) -> None:
    assert a.vocab == b.vocab
    assert a.tokens.dtype == b.tokens.dtype
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.lines, b.lines)
    assert [tuple(r) for r in a.rejects] == [tuple(r) for r in b.rejects]


# ------------------------------------------------------------------------------ .smi
def test_read_smi_without_header(tmp_path, moses_smiles):
    p = tmp_path / "a.smi"
    p.write_text("\n".join(moses_smiles[:5]) + "\n")
    raw = read_molecules(p)
    assert raw.texts == moses_smiles[:5]
    assert raw.lines == [1, 2, 3, 4, 5]
    assert raw.errors == {}


def test_read_smi_with_header_and_name_column(tmp_path):
    p = tmp_path / "a.smi"
    p.write_text("smiles name\nCCO ethanol\n\nc1ccccc1\tbenzene\nCC(=O)O acetic acid\n")
    raw = read_molecules(p)
    assert raw.texts == ["CCO", None, "c1ccccc1", "CC(=O)O"]  # the blank line 3 is a row
    assert raw.lines == [2, 3, 4, 5]
    assert raw.problem(1) == ("empty", "blank line")
    assert raw.ids == ["ethanol", "", "benzene", "acetic acid"]


def test_read_smi_first_line_molecule_is_not_a_header(tmp_path):
    p = tmp_path / "a.smi"
    p.write_text("C\nCC\n")
    assert read_molecules(p).texts == ["C", "CC"]


def test_read_smi_gz(tmp_path, moses_smiles):
    p = tmp_path / "a.smi"
    p.write_text("SMILES\n" + "\n".join(moses_smiles[:7]) + "\n")
    raw = read_molecules(_gzip(p))
    assert raw.texts == moses_smiles[:7]
    assert raw.lines == list(range(2, 9))


# ------------------------------------------------------------------------------ .csv
def test_read_csv_autodetects_column(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,Canonical_SMILES,score\n1,CCO,0.5\n2,c1ccccc1,0.7\n")
    raw = read_molecules(p)
    assert raw.texts == ["CCO", "c1ccccc1"]
    assert raw.lines == [2, 3]


def test_read_csv_with_named_column(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,structure,smiles\n1,CCO,XXX\n2,CCN,YYY\n")
    assert read_molecules(p, smiles_column="structure").texts == ["CCO", "CCN"]


def test_read_csv_missing_column_names_the_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,structure\n1,CCO\n")
    with pytest.raises(DataFileError) as info:
        read_molecules(p, smiles_column="smiles_col")
    msg = str(info.value)
    assert "smiles_col" in msg and "id" in msg and "structure" in msg and str(p) in msg
    assert "\n" not in msg


def test_read_csv_no_detectable_column_names_the_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,structure\n1,CCO\n")
    with pytest.raises(DataFileError) as info:
        read_molecules(p)
    msg = str(info.value)
    assert "id" in msg and "structure" in msg and "--smiles-column" in msg


def test_read_csv_short_row_is_missing_value(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,smiles\n1,CCO\n2\n3,CCN\n")
    raw = read_molecules(p)
    assert raw.texts == ["CCO", None, "CCN"]
    assert raw.lines == [2, 3, 4]


def test_read_csv_with_utf8_bom(tmp_path):
    """Spreadsheet exports start with a byte-order mark; the SMILES column is still found."""
    p = tmp_path / "excel.csv"
    p.write_text("SMILES,id\nCCO,1\nCCN,2\n", encoding="utf-8-sig")
    assert read_molecules(p).texts == ["CCO", "CCN"]


def test_read_tsv_and_csv_gz(tmp_path):
    t = tmp_path / "a.tsv"
    t.write_text("name\tsmiles\nethanol\tCCO\n")
    assert read_molecules(t).texts == ["CCO"]
    c = tmp_path / "b.csv"
    c.write_text("x,smiles\n1,CCN\n2,CCC\n")
    raw = read_molecules(_gzip(c))
    assert raw.texts == ["CCN", "CCC"] and raw.lines == [2, 3]


def test_read_csv_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(DataFileError, match="empty"):
        read_molecules(p)


# ------------------------------------------------------------------------------ .sdf
def _write_sdf(path: Path, smiles: list[str]) -> None:
    w = Chem.SDWriter(str(path))
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        mol.SetProp("_Name", s)
        w.write(mol)
    w.close()


def test_read_sdf(tmp_path):
    p = tmp_path / "a.sdf"
    _write_sdf(p, ["OCC", "c1ccccc1", "CC(=O)[O-]"])
    raw = read_molecules(p)
    assert raw.texts == ["CCO", "c1ccccc1", "CC(=O)[O-]"]
    assert raw.lines == [1, 2, 3]
    assert raw.errors == {}


def test_read_sdf_gz_with_bad_records(tmp_path):
    p = tmp_path / "a.sdf"
    _write_sdf(p, ["CCO"])
    bad_valence = Chem.MolToMolBlock(Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False))
    broken = "bad\n  RDKit\n\n  x  y  0  0  0  0  0  0  0  0999 V2000\nM  END\n"
    with p.open("a") as fh:
        fh.write(bad_valence + "$$$$\n" + broken + "$$$$\n")
        fh.write(Chem.MolToMolBlock(Chem.MolFromSmiles("CCN")) + "$$$$\n")
    raw = read_molecules(_gzip(p))
    assert raw.texts == ["CCO", None, None, "CCN"]
    assert raw.lines == [1, 2, 3, 4]
    assert "valence" in raw.errors[1].lower()
    assert "unparsable" in raw.errors[2]


def test_sdf_bad_records_become_rejects_with_record_numbers(tmp_path):
    p = tmp_path / "a.sdf"
    _write_sdf(p, ["CCO", "CCN"])
    with p.open("a") as fh:
        fh.write(Chem.MolToMolBlock(Chem.MolFromSmiles("CO(C)C", sanitize=False)) + "$$$$\n")
    data, _ = D.load_dataset(p, num_workers=1, use_cache=False)
    assert len(data) == 2
    assert [(r[0], r[2]) for r in data.rejects] == [(3, "invalid")]
    assert "valence" in data.rejects[0][3].lower()


# ------------------------------------------------------------------------------ file errors
def test_nonexistent_file(tmp_path):
    with pytest.raises(DataFileError, match="not found") as info:
        read_molecules(tmp_path / "nope.smi")
    assert "nope.smi" in str(info.value)
    with pytest.raises(DataFileError, match="not found"):
        D.load_dataset(tmp_path / "nope.csv", cache_dir=tmp_path / "cache")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(DataFileError, match="directory"):
        read_molecules(tmp_path)


@pytest.mark.parametrize("name", ["mols.xyz", "mols", "mols.json.gz"])
def test_unknown_extension(tmp_path, name):
    p = tmp_path / name
    p.write_text("CCO\n")
    with pytest.raises(DataFileError, match="unknown file type") as info:
        read_molecules(p)
    assert ".smi" in str(info.value) and "\n" not in str(info.value)


def test_not_really_gzip(tmp_path):
    p = tmp_path / "mols.smi.gz"
    p.write_text("CCO\n")
    with pytest.raises(DataFileError, match="cannot read"):
        read_molecules(p)


def test_file_without_molecules(tmp_path):
    p = tmp_path / "only_header.csv"
    p.write_text("smiles\n")
    with pytest.raises(DataFileError, match="no molecules"):
        D.load_dataset(p, cache_dir=tmp_path / "cache")


def test_data_file_error_is_value_error():
    assert issubclass(DataFileError, ValueError)


# ------------------------------------------------------------------------------ rejects
def test_rejects_carry_line_numbers(tmp_path, moses_smiles):
    rows = list(moses_smiles[:20])
    rows[4] = "C1CC"  # line 6
    rows[9] = ""  # line 11: an empty field in a CSV row
    rows[14] = "*CC"  # line 16
    p = tmp_path / "mols.csv"
    p.write_text("smiles,n\n" + "".join(f"{s},{i}\n" for i, s in enumerate(rows)))
    data, _ = D.load_dataset(p, num_workers=1, cache_dir=tmp_path / "cache")
    assert len(data) == 17
    got = {r[0]: r for r in data.rejects}
    assert sorted(got) == [6, 11, 16]
    assert got[6][1:3] == ("C1CC", "invalid") and "unparsable" in got[6][3]
    assert got[11][2] == "empty" and "empty" in got[11][3]
    assert got[16][1:3] == ("*CC", "unsupported")
    assert 6 not in set(data.lines) and 5 in set(data.lines)


def test_write_rejects(tmp_path):
    out = tmp_path / "rejects.csv"
    D.write_rejects(out, [(3, "C1CC", "invalid", "unparsable SMILES")])
    assert out.read_text().splitlines() == ["line,input,status,reason",
                                            "3,C1CC,invalid,unparsable SMILES"]


# ------------------------------------------------------------------------------ tokenizing
def test_tokenize_layout(moses_tokens, moses_smiles):
    data = moses_tokens
    assert len(data) == len(moses_smiles)
    assert data.offsets[0] == 0 and data.offsets[-1] == len(data.tokens)
    assert data.tokens.dtype == np.uint8
    assert list(data.lines[:3]) == [1, 2, 3]
    from molvae import chem
    for i in (0, 17, len(data) - 1):
        assert chem.selfies_to_smiles(data.selfies(i)) == chem.prepare(moses_smiles[i]).smiles
        assert len(data.ids(i)) == data.lengths[i]


def test_parallel_and_serial_tokenization_are_identical(moses_smiles):
    texts = list(moses_smiles[:600])
    texts[10], texts[300], texts[599] = "C1CC", None, "CC[Se]C"
    serial = tokenize(texts, num_workers=1, chunk_size=100)
    parallel = tokenize(texts, num_workers=2, chunk_size=100)
    _assert_same_tokens(serial, parallel)
    assert len(serial.rejects) == 2  # [Se] joins the vocabulary built from the data
    assert [r[0] for r in serial.rejects] == [11, 301]


def test_tokenize_with_vocab_in_parallel_matches_serial(moses_smiles, moses_tokens):
    texts = list(moses_smiles[:400]) + ["CC[Se]C"]
    serial = tokenize(texts, vocab=moses_tokens.vocab, num_workers=1, chunk_size=50)
    parallel = tokenize(texts, vocab=moses_tokens.vocab, num_workers=2, chunk_size=50)
    _assert_same_tokens(serial, parallel)
    assert serial.rejects[-1][0] == 401 and serial.rejects[-1][2] == "unknown_token"


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("threads", [1, 3])
def test_tokenize_leaves_torch_threads_alone(workers, threads):
    """Library calls set no global state (DESIGN.md section 4): the caller's torch thread
    count survives tokenizing in the calling process."""
    torch.set_num_threads(threads)
    tokenize(["CCO", "CCN"], num_workers=workers)
    assert torch.get_num_threads() == threads


# ------------------------------------------------------------------------------ cache
@pytest.fixture
def cached(tmp_path, small_csv):
    """A private copy of the small CSV, loaded once so the cache holds it."""
    p = tmp_path / "mols.csv"
    shutil.copy(small_csv, p)
    cache = tmp_path / "cache"
    data, sha = D.load_dataset(p, num_workers=1, cache_dir=cache)
    return p, cache, data, sha


def _count_tokenize(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = D.tokenize

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(D, "tokenize", counting)
    return calls


def test_cache_is_reused(cached, monkeypatch):
    p, cache, first, sha = cached
    files = list((cache / "tokens").glob("*.npz"))
    assert len(files) == 1

    def boom(*args, **kwargs):
        raise AssertionError("tokenize called although the cache is valid")

    monkeypatch.setattr(D, "tokenize", boom)
    second, sha2 = D.load_dataset(p, num_workers=1, cache_dir=cache)
    assert sha2 == sha == file_sha256(p)
    _assert_same_tokens(first, second)


def test_changed_file_retokenizes(cached, monkeypatch):
    p, cache, first, sha = cached
    calls = _count_tokenize(monkeypatch)
    with p.open("a") as fh:
        fh.write("CCO\n")
    data, sha2 = D.load_dataset(p, num_workers=1, cache_dir=cache)
    assert calls == [1]
    assert sha2 != sha
    assert len(data) == len(first) + 1


@pytest.mark.parametrize("change", [{"max_len": 30}, {"keep_stereo": False},
                                    {"largest_fragment": False}])
def test_changed_settings_retokenize(cached, monkeypatch, change):
    p, cache, first, _ = cached
    calls = _count_tokenize(monkeypatch)
    data, _ = D.load_dataset(p, num_workers=1, cache_dir=cache, **change)
    assert calls == [1]
    if "max_len" in change:
        assert int(data.lengths.max()) <= 30 and len(data) < len(first)
        assert {r[2] for r in data.rejects} == {"too_long"}
    # and the original settings still hit their own cache entry
    again, _ = D.load_dataset(p, num_workers=1, cache_dir=cache)
    assert calls == [1]
    _assert_same_tokens(first, again)


def test_corrupt_cache_is_rebuilt(cached, monkeypatch):
    p, cache, first, _ = cached
    (cache_file,) = (cache / "tokens").glob("*.npz")
    cache_file.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    calls = _count_tokenize(monkeypatch)
    data, _ = D.load_dataset(p, num_workers=1, cache_dir=cache)
    assert calls == [1]
    _assert_same_tokens(first, data)
    # the rebuilt cache is good again
    data2, _ = D.load_dataset(p, num_workers=1, cache_dir=cache)
    assert calls == [1]
    _assert_same_tokens(first, data2)


def test_use_cache_false_writes_nothing(tmp_path, small_csv):
    cache = tmp_path / "cache"
    D.load_dataset(small_csv, num_workers=1, cache_dir=cache, use_cache=False)
    assert not list(cache.rglob("*.npz"))


def test_cache_applies_vocab_after_loading(cached):
    p, cache, first, _ = cached
    vocab = Vocab(tuple(s for s in first.vocab.symbols if s != "[F]"), first.vocab.constraints)
    data, _ = D.load_dataset(p, vocab=vocab, num_workers=1, cache_dir=cache)
    assert data.vocab == vocab
    n_f = sum("[F]" in first.selfies(i) for i in range(len(first)))
    assert n_f > 0
    assert len(data) == len(first) - n_f
    # the cache still holds the file in its own vocabulary
    again, _ = D.load_dataset(p, num_workers=1, cache_dir=cache)
    _assert_same_tokens(first, again)


# ------------------------------------------------------------------------------ TokenData
def test_subset(moses_tokens):
    idx = np.array([5, 0, 1999, 42, 42])
    sub = moses_tokens.subset(idx)
    assert len(sub) == 5
    assert sub.vocab == moses_tokens.vocab
    np.testing.assert_array_equal(sub.lines, moses_tokens.lines[idx])
    np.testing.assert_array_equal(sub.lengths, moses_tokens.lengths[idx])
    for j, i in enumerate(idx):
        assert sub.selfies(j) == moses_tokens.selfies(i)
    assert len(moses_tokens.subset(np.array([], dtype=np.int64))) == 0


def test_with_vocab_superset_keeps_everything(moses_tokens):
    data = moses_tokens.subset(np.arange(300))
    bigger = Vocab(tuple(sorted(data.vocab.symbols + ("[Se]", "[Aa]", "[=Se]"))),
                   data.vocab.constraints)
    out = data.with_vocab(bigger)
    assert out.vocab == bigger and len(out) == 300 and out.rejects == []
    for i in range(300):
        assert out.selfies(i) == data.selfies(i)
    assert not np.array_equal(out.tokens, data.tokens)  # ids really were remapped


def test_with_vocab_missing_symbol_rejects_rows(moses_tokens):
    data = moses_tokens.subset(np.arange(300))
    smaller = Vocab(tuple(s for s in data.vocab.symbols if s != "[Cl]"), data.vocab.constraints)
    out = data.with_vocab(smaller)
    has_cl = [i for i in range(300) if "[Cl]" in data.selfies(i)]
    assert has_cl
    assert len(out) == 300 - len(has_cl)
    assert sorted(r[0] for r in out.rejects) == sorted(int(data.lines[i]) for i in has_cl)
    assert all(r[2] == "unknown_token" and "[Cl]" in r[3] for r in out.rejects)
    kept = [i for i in range(300) if i not in set(has_cl)]
    for j, i in enumerate(kept):
        assert out.selfies(j) == data.selfies(i)
        assert out.lines[j] == data.lines[i]


def test_collate_layout(moses_tokens):
    idx = np.array([3, 1, 4])
    x, lengths = D.collate(moses_tokens, idx)
    assert x.dtype == torch.long and lengths.dtype == torch.long
    assert x.shape == (3, int(moses_tokens.lengths[idx].max()) + 1)
    for r, i in enumerate(idx):
        n = int(moses_tokens.lengths[i])
        assert lengths[r] == n
        assert x[r, :n].tolist() == moses_tokens.ids(i).tolist()
        assert x[r, n] == EOS
        assert (x[r, n + 1:] == PAD).all()


def test_split_indices():
    tr, va = D.split_indices(1000, 0.1, 50, seed=3)
    assert len(va) == 50 and len(tr) == 950
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(1000))
    tr2, va2 = D.split_indices(1000, 0.1, 50, seed=3)
    np.testing.assert_array_equal(va, va2)
    _, va3 = D.split_indices(1000, 0.1, 50, seed=4)
    assert not np.array_equal(va, va3)
    tr, va = D.split_indices(2, 0.01, 100, seed=0)
    assert len(tr) == 1 and len(va) == 1
    with pytest.raises(DataFileError):
        D.split_indices(1, 0.5, 100, seed=0)


# ------------------------------------------------------------------------------ batching
def test_bucket_batcher_seeded(moses_tokens):
    a = BucketBatcher(moses_tokens.lengths, 32, seed=7, bucket_batches=8)
    b = BucketBatcher(moses_tokens.lengths, 32, seed=7, bucket_batches=8)
    for e in (0, 3):
        ea, eb = a.epoch(e), b.epoch(e)
        assert len(ea) == len(eb)
        assert all(np.array_equal(x, y) for x, y in zip(ea, eb))
    c = BucketBatcher(moses_tokens.lengths, 32, seed=8, bucket_batches=8)
    assert not all(np.array_equal(x, y) for x, y in zip(a.epoch(0), c.epoch(0)))


def test_bucket_batcher_every_index_once(moses_tokens):
    n = len(moses_tokens)
    b = BucketBatcher(moses_tokens.lengths, 48, seed=0, bucket_batches=4)
    assert len(b) == -(-n // 48)
    for e in range(3):
        batches = b.epoch(e)
        assert len(batches) == len(b)
        assert all(1 <= len(x) <= 48 for x in batches)
        flat = np.concatenate(batches)
        assert len(flat) == n
        assert np.array_equal(np.sort(flat), np.arange(n))


def test_bucket_batcher_epochs_differ(moses_tokens):
    b = BucketBatcher(moses_tokens.lengths, 32, seed=0, bucket_batches=8)
    e0, e1 = np.concatenate(b.epoch(0)), np.concatenate(b.epoch(1))
    assert not np.array_equal(e0, e1)
    assert {tuple(x) for x in b.epoch(0)} != {tuple(x) for x in b.epoch(1)}


@pytest.mark.parametrize(("batch_size", "bucket_batches"), [(32, 8), (64, 16), (128, 64)])
def test_bucket_batcher_padding(moses_tokens, batch_size, bucket_batches):
    lengths = moses_tokens.lengths
    b = BucketBatcher(lengths, batch_size, seed=0, bucket_batches=bucket_batches)
    ratio = b.padding_ratio(0)
    assert 1.0 <= ratio <= 1.15
    # and well below what unbucketed random batches cost
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(lengths))
    real = padded = 0
    for i in range(0, len(perm), batch_size):
        lens = lengths[perm[i: i + batch_size]] + 1
        real += int(lens.sum())
        padded += int(lens.max()) * len(lens)
    assert ratio < padded / real


def test_bucket_batches_hold_similar_lengths(moses_tokens):
    b = BucketBatcher(moses_tokens.lengths, 32, seed=0, bucket_batches=8)
    spreads = [int(np.ptp(moses_tokens.lengths[x])) for x in b.epoch(0)]
    assert np.median(spreads) <= 2
