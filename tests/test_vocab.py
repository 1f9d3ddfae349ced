"""molvae.vocab and the vocabulary-dependent bad-input classes (unknown_token, too_long)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from molvae import chem
from molvae.data import tokenize
from molvae.vocab import BOS, EOS, PAD, SPECIALS, UnknownTokenError, Vocab, symbols_of


@pytest.fixture(scope="module")
def moses_selfies(moses_smiles):
    out = [chem.prepare(s).selfies for s in moses_smiles[:500]]
    assert all(out)
    return out


@pytest.fixture(scope="module")
def moses_vocab(moses_tokens):
    return moses_tokens.vocab


# ------------------------------------------------------------------------------ building
def test_specials_come_first():
    v = Vocab.build(["[C][O]"])
    assert v.tokens[:3] == SPECIALS
    assert (PAD, BOS, EOS) == (0, 1, 2)
    assert v.tokens[PAD] == "[pad]" and v.tokens[BOS] == "[bos]" and v.tokens[EOS] == "[eos]"
    assert len(v) == 5


def test_build_is_deterministic_under_shuffling(moses_selfies):
    shuffled = list(moses_selfies)
    random.Random(0).shuffle(shuffled)
    a, b = Vocab.build(moses_selfies), Vocab.build(shuffled)
    assert a == b
    assert a.tokens == b.tokens
    assert list(a.symbols) == sorted(a.symbols)
    assert len(set(a.symbols)) == len(a.symbols)
    for s in moses_selfies:
        assert a.encode(s) == b.encode(s)


def test_build_covers_every_symbol(moses_selfies):
    v = Vocab.build(moses_selfies)
    assert set(v.symbols) == {t for s in moses_selfies for t in symbols_of(s)}


def test_build_records_constraints():
    v = Vocab.build(["[C][O]"])
    assert v.constraints == chem.default_constraints()
    custom = dict(chem.default_constraints(), C=3)
    w = Vocab.build(["[C][O]"], constraints=custom)
    assert w.constraints["C"] == 3
    assert v != w  # the constraint set is part of the vocabulary's identity


def test_dict_round_trip_keeps_constraints():
    custom = dict(chem.default_constraints(), N=5)
    v = Vocab.build(["[C][=N][Cl]"], constraints=custom)
    d = v.to_dict()
    assert d["constraints"]["N"] == 5
    w = Vocab.from_dict(d)
    assert w == v and w.tokens == v.tokens and w.constraints == custom


def test_dtype_grows_past_256_tokens():
    small = Vocab(tuple(f"[X{i}]" for i in range(253)))
    big = Vocab(tuple(f"[X{i}]" for i in range(254)))
    assert len(small) == 256 and small.dtype == np.uint8
    assert len(big) == 257 and big.dtype == np.uint16


# ------------------------------------------------------------------------------ encode/decode
def test_encode_decode_round_trip(moses_selfies, moses_vocab):
    for s in moses_selfies:
        ids = moses_vocab.encode(s)
        assert all(i >= len(SPECIALS) for i in ids)
        assert moses_vocab.decode(ids) == s
        assert moses_vocab.decode([*ids, EOS]) == s


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    v = Vocab.build(["[C][N][O]"])
    c, n, o = v.encode("[C][N][O]")
    assert v.decode([c, n, EOS, o, o]) == "[C][N]"
    assert v.decode([BOS, c, PAD, n, EOS, o]) == "[C][N]"
    assert v.decode([EOS, c]) == ""
    assert v.decode(np.array([c, o, EOS, PAD, PAD], dtype=np.uint8)) == "[C][O]"


def test_encode_unknown_symbol_raises_naming_it(moses_vocab):
    with pytest.raises(UnknownTokenError) as info:
        moses_vocab.encode("[C][Se][C][Si][Se]")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.tokens == ["[Se]", "[Si]"]
    assert "[Se]" in str(err) and "[Si]" in str(err)


def test_unknown_lists_symbols(moses_vocab):
    assert moses_vocab.unknown("[C][C][Se]") == ["[Se]"]
    assert moses_vocab.unknown("[C][C][O]") == []


def test_remap_from():
    a = Vocab.build(["[C][N][O]"])
    b = Vocab.build(["[C][O][F]"])
    table = b.remap_from(a)
    assert list(table[:3]) == [0, 1, 2]
    for sym in ("[C]", "[O]"):
        assert b.tokens[table[a.tokens.index(sym)]] == sym
    assert table[a.tokens.index("[N]")] == -1


# ------------------------------------------------------------------------------ unknown_token
@pytest.mark.parametrize(
    ("smiles", "symbol"),
    [
        ("CC[Se]C", "[Se]"),  # atom outside the vocabulary
        ("C[Si](C)(C)C", "[Si]"),
        ("C[N+](C)(C)C", "[N+1]"),  # charge outside the vocabulary
        ("CC(=O)[O-]", "[O-1]"),
        ("[13CH3]CC", "[13CH3]"),  # isotope outside the vocabulary
        ("[2H]OC", "[2H]"),
    ],
)
def test_tokenize_unknown_token(moses_vocab, smiles, symbol):
    data = tokenize([smiles], vocab=moses_vocab, num_workers=1)
    assert len(data) == 0
    assert len(data.rejects) == 1
    line, text, status, reason = data.rejects[0]
    assert line == 1
    assert status == "unknown_token"
    assert symbol in reason
    assert text  # the molecule is named in the reject
    with pytest.raises(UnknownTokenError) as info:
        moses_vocab.encode(chem.prepare(smiles).selfies)
    assert symbol in info.value.tokens


def test_unknown_token_does_not_sink_the_batch(moses_smiles, moses_vocab):
    texts = [moses_smiles[0], "CC[Se]C", moses_smiles[1]]
    data = tokenize(texts, vocab=moses_vocab, num_workers=1)
    assert len(data) == 2
    assert list(data.lines) == [1, 3]
    assert [r[0] for r in data.rejects] == [2]


# ------------------------------------------------------------------------------ too_long
def test_tokenize_too_long():
    smiles = "C" * 10  # ten [C] symbols
    data = tokenize([smiles, "CCCCC", "CCCCCC"], max_len=5, num_workers=1)
    assert len(data) == 1  # exactly max_len is allowed
    assert list(data.lengths) == [5]
    assert len(data.rejects) == 2
    by_line = {r[0]: r for r in data.rejects}
    line, text, status, reason = by_line[1]
    assert status == "too_long"
    assert text == smiles
    assert "10" in reason and "5" in reason
    assert by_line[3][2] == "too_long" and "6" in by_line[3][3]


def test_too_long_is_never_truncated(moses_smiles):
    data = tokenize(moses_smiles[:50], max_len=20, num_workers=1)
    assert int(data.lengths.max()) <= 20
    assert len(data) + len(data.rejects) == 50
    assert all(r[2] == "too_long" for r in data.rejects)
