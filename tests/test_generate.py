"""The generation API (DESIGN.md sections 4 and 7): sample, iter_sample, encode, decode,
reconstruct, interpolate, neighbours, elbo -- on the session's tiny trained run."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from rdkit import Chem, rdBase

import molvae
from molvae import MoleculeError
from molvae.checkpoint import Model
from molvae.generate import iter_sample, prepare_inputs

# every kind of bad input of DESIGN.md section 7, with a word its reason must contain
BAD = [
    ("", "empty"),
    ("xyz", "unparsable"),
    (None, "missing"),
    ("C*", "wildcard"),
    ("C[Si](C)(C)C", "[Si]"),
    ("C" * 200, "too_long"),
    ("C(C)(C)(C)(C)C", "valence"),
]
GOOD = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1"]


@pytest.fixture(scope="module")
def model(trained_run) -> Model:
    out, _ = trained_run
    return molvae.load(out)


@pytest.fixture(scope="module")
def short_model(model) -> Model:
    """The same network with max_len 12: decoding stops after 13 steps, so it is quick."""
    return dataclasses.replace(model, config=dataclasses.replace(model.config, max_len=12))


def _canonical(s: str) -> str:
    with rdBase.BlockLogs():
        return Chem.MolToSmiles(Chem.MolFromSmiles(s))


def _same_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=1e-5, equal_nan=True)


# ----------------------------------------------------------------------------------- sample
@pytest.mark.parametrize("n", [0, 1, 7, 25])
def test_sample_returns_exactly_n(model, n):
    out = molvae.sample(model, n, seed=0, batch_size=3, consistent=False)
    assert isinstance(out, list) and len(out) == n
    assert all(s is None or isinstance(s, str) for s in out)


def test_sample_outputs_are_canonical_smiles(model):
    out = molvae.sample(model, 200, temperature=1.0, seed=1, consistent=False)
    valid = [s for s in out if s is not None]
    assert valid, "the tiny model should decode some valid molecules"
    for s in valid:
        assert s, "an empty decode must be None, not ''"
        assert _canonical(s) == s


def test_sample_seeded(model):
    a = molvae.sample(model, 30, seed=5, consistent=False)
    assert molvae.sample(model, 30, seed=5, consistent=False) == a
    assert molvae.sample(model, 30, seed=6, consistent=False) != a


def test_sample_temperature_zero_is_greedy(model):
    assert (molvae.sample(model, 12, temperature=0.0, seed=2, consistent=False)
            == molvae.sample(model, 12, seed=2, greedy=True, consistent=False))


def test_sample_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="n must be"):
        molvae.sample(model, -1)
    with pytest.raises(ValueError, match="temperature"):
        molvae.sample(model, 3, temperature=-0.5)


def test_sample_rejects_nan_temperature(model):
    """NaN passes the `temperature < 0` check and dies inside torch.multinomial."""
    with pytest.raises(ValueError, match="temperature"):
        molvae.sample(model, 3, temperature=float("nan"), seed=0)


def test_iter_sample_rejects_zero_batch_size(model):
    """batch_size=0 would make no progress; it must be a clear ValueError."""
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_sample(model, 5, batch_size=0, seed=0))


def test_iter_sample_concatenation_equals_sample(model):
    parts = list(iter_sample(model, 23, temperature=1.0, seed=4, batch_size=5, consistent=False))
    assert [len(p) for p in parts] == [5, 5, 5, 5, 3]
    flat = [s for p in parts for s in p]
    assert flat == molvae.sample(model, 23, temperature=1.0, seed=4, batch_size=5,
                                 consistent=False)


def test_samples_do_not_depend_on_threads_and_threads_are_restored(model):
    """Chunks carry their own seeded streams: one decoding thread or two give the same
    molecules; torch's intra-op thread count is back afterwards, also after an early stop."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = molvae.sample(model, 40, seed=3, batch_size=6, consistent=False)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert molvae.sample(model, 40, seed=3, batch_size=6, consistent=False) == one
        assert torch.get_num_threads() == 2
        parts = iter_sample(model, 40, seed=3, batch_size=6, consistent=False)
        assert next(parts) == one[:6]
        parts.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_iter_sample_ids_are_what_sample_decodes(model):
    from molvae.generate import _ids_to_smiles, iter_sample_ids
    batches = list(iter_sample_ids(model, 17, seed=2, batch_size=5))
    assert [len(b) for b in batches] == [5, 5, 5, 2]
    payload = (list(model.vocab.symbols), dict(model.vocab.constraints))
    smiles = [s for b in batches for s in _ids_to_smiles((*payload, b))]
    assert smiles == molvae.sample(model, 17, seed=2, batch_size=5, consistent=False)


def test_worker_post_processing_matches_in_process(short_model, monkeypatch):
    """n >= 4096 with workers >= 1 post-processes in a process pool: same answer as inline."""
    import molvae.decoding as gen_mod
    pools = []

    class SpyPool(gen_mod.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    inline = molvae.sample(short_model, 5000, seed=9, batch_size=1000, workers=0,
                           consistent=False)
    assert pools == []
    monkeypatch.setattr(gen_mod, "ProcessPoolExecutor", SpyPool)
    parts = list(iter_sample(short_model, 5000, seed=9, batch_size=1000, workers=1,
                             consistent=False))
    assert len(pools) == 1, "the worker path was not taken"
    assert [len(p) for p in parts] == [1000] * 5
    assert [s for p in parts for s in p] == inline


# ----------------------------------------------------------------------------------- decode
def test_decode_lengths_and_order(model):
    z = torch.randn(9, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    out = molvae.decode(model, z)
    assert len(out) == 9
    assert all(s is None or (isinstance(s, str) and _canonical(s) == s) for s in out)
    assert molvae.decode(model, z.flip(0)) == out[::-1]
    assert molvae.decode(model, z.numpy()) == out  # numpy in, same answer
    assert molvae.decode(model, z, batch_size=4) == out


def test_decode_single_vector(model):
    z = torch.randn(model.config.latent_dim, generator=torch.Generator().manual_seed(1))
    one = molvae.decode(model, z)
    assert isinstance(one, list) and len(one) == 1
    assert one == molvae.decode(model, z[None])


def test_decode_seeded_with_temperature(model):
    z = torch.randn(10, model.config.latent_dim, generator=torch.Generator().manual_seed(2))
    assert (molvae.decode(model, z, temperature=1.0, seed=3)
            == molvae.decode(model, z, temperature=1.0, seed=3))


def test_decode_rejects_wrong_shape(model):
    with pytest.raises(ValueError, match="shape"):
        molvae.decode(model, torch.zeros(3, model.config.latent_dim + 1))
    with pytest.raises(ValueError, match="shape"):
        molvae.decode(model, torch.zeros(2, 3, model.config.latent_dim))


def test_decode_never_returns_an_unterminated_sequence(model):
    """A decode that runs out of steps without [eos] was cut off: returning it gives a
    molecule longer than the model's own max_len (the model then rejects it as too_long).
    Here a decoder that always emits [C] is cut off after max_len + 1 steps."""
    m = copy.deepcopy(model)
    c_id = m.vocab.tokens.index("[C]")
    with torch.no_grad():
        m.net.decoder.out.weight.zero_()
        m.net.decoder.out.bias.fill_(-20.0)
        m.net.decoder.out.bias[c_id] = 20.0
    out = molvae.decode(m, torch.zeros(2, m.config.latent_dim))
    assert len(out) == 2
    too_long = [p for p in prepare_inputs(m, [s for s in out if s]).problems
                if p[2] == "too_long"]
    assert not too_long, f"decoded molecules longer than max_len={m.config.max_len}: {too_long}"


def test_small_decode_is_plain_synchronous_code(model, monkeypatch):
    """Up to batch_size points decode on the calling thread: no thread pool, and torch's
    process-wide thread count is never touched, not even for a moment (the optimizer decodes
    1..200 points thousands of times, possibly from several threads of its own)."""
    import molvae.decoding as gen_mod
    torch.set_num_threads(2)  # the streaming decoder would switch this to 1 and back
    real = torch.set_num_threads
    calls: list[int] = []
    pools: list[int] = []

    def spy_set_num_threads(n: int) -> None:
        calls.append(n)
        real(n)

    class SpyPool(gen_mod.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch, "set_num_threads", spy_set_num_threads)
    monkeypatch.setattr(gen_mod, "ThreadPoolExecutor", SpyPool)
    z = torch.randn(7, model.config.latent_dim, generator=torch.Generator().manual_seed(3))
    assert len(molvae.decode(model, z, temperature=1.0, seed=0)) == 7
    assert len(molvae.decode(model, z)) == 7
    assert len(molvae.reconstruct(model, GOOD)) == len(GOOD)
    assert len(molvae.interpolate(model, "CCO", "c1ccccc1", steps=4)) == 4
    assert molvae.decode(model, torch.zeros(0, model.config.latent_dim)) == []
    assert calls == [] and pools == []
    assert torch.get_num_threads() == 2
    molvae.decode(model, z, batch_size=3)  # three chunks: the streaming decoder, as a check
    assert pools and calls, "the spies should see the streaming decoder"
    assert torch.get_num_threads() == 2


def test_small_decode_gives_what_the_streaming_decoder_gives(model):
    """Same seed, same molecules: a small decode uses the generator of the streaming
    decoder's first chunk, so it equals that chunk; greedy decodes agree everywhere."""
    z = torch.randn(24, model.config.latent_dim, generator=torch.Generator().manual_seed(4))
    streamed = molvae.decode(model, z, temperature=1.0, seed=5, batch_size=12)  # two chunks
    small = molvae.decode(model, z[:12], temperature=1.0, seed=5, batch_size=12)  # one
    assert small == streamed[:12]
    assert small != molvae.decode(model, z[:12], temperature=1.0, seed=6), "seed has no effect?"
    assert molvae.decode(model, z) == molvae.decode(model, z, batch_size=5)  # greedy


def test_decode_rejects_bad_temperature_and_batch_size(model):
    z = torch.zeros(2, model.config.latent_dim)
    with pytest.raises(ValueError, match="temperature"):
        molvae.decode(model, z, temperature=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        molvae.decode(model, z, temperature=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        molvae.decode(model, z, batch_size=0)


# ----------------------------------------------------------------------------------- encode
def test_encode_posterior_means(model):
    z = molvae.encode(model, GOOD)
    assert isinstance(z, torch.Tensor) and z.dtype == torch.float32
    assert z.shape == (len(GOOD), model.config.latent_dim)
    assert torch.isfinite(z).all()
    assert torch.equal(molvae.encode(model, GOOD), z)  # means: no randomness
    # rows do not depend on their neighbours
    assert _same_rows(molvae.encode(model, GOOD[::-1]), z.flip(0))
    assert _same_rows(molvae.encode(model, GOOD[1:2]), z[1:2])


def test_encode_empty_list(model):
    z = molvae.encode(model, [])
    assert z.shape == (0, model.config.latent_dim)


def test_encode_accepts_rdkit_mols(model):
    mols = [Chem.MolFromSmiles(s) for s in GOOD]
    z_mol = molvae.encode(model, mols)
    assert _same_rows(z_mol, molvae.encode(model, GOOD))
    mixed = molvae.encode(model, [GOOD[0], mols[1], GOOD[2]])
    assert _same_rows(mixed, z_mol)


def test_encode_accepts_mols_with_explicit_hydrogens(model):
    """Mols from 3-D tools and SD files carry explicit H atoms; they are the same molecules.
    (Aromatic ones currently fail: 'kekulization failed' or a benzene -> cyclohexane round
    trip, because chem.standardize removes the H atoms without refreshing the H counts.)"""
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in GOOD]
    z_h = molvae.encode(model, mols, errors="nan")
    assert torch.isfinite(z_h).all(), prepare_inputs(model, mols).problems
    assert _same_rows(z_h, molvae.encode(model, GOOD))


def test_encode_non_canonical_spelling_gives_same_z(model):
    assert _same_rows(molvae.encode(model, ["OCC", "C1=CC=CC=C1"]),
                      molvae.encode(model, ["CCO", "c1ccccc1"]))


def test_encode_max_len_boundary(model):
    n = model.config.max_len
    z = molvae.encode(model, ["C" * n, "C" * (n + 1)], errors="nan")
    assert torch.isfinite(z[0]).all()
    assert torch.isnan(z[1]).all()


def test_encode_raise_names_every_bad_input(model):
    items = [GOOD[0]] + [text for text, _ in BAD] + [GOOD[1]]
    with pytest.raises(MoleculeError) as info:
        molvae.encode(model, items, errors="raise")
    err = info.value
    assert isinstance(err, ValueError)
    msg = str(err)
    assert [p[0] for p in err.problems] == list(range(1, len(BAD) + 1))
    for i, (text, word) in enumerate(BAD, start=1):
        assert f"[{i}] {text!r}" in msg, (i, text, msg)
        line = next(ln for ln in msg.splitlines() if ln.strip().startswith(f"[{i}]"))
        assert word in line, (word, line)
    assert "[0]" not in msg and f"[{len(items) - 1}]" not in msg


def test_encode_raise_names_salts_with_unknown_atoms(model):
    """The largest fragment is kept; an atom outside the vocabulary is still named."""
    with pytest.raises(MoleculeError) as info:
        molvae.encode(model, ["CCO", "[Na+].[Cl-]"])
    msg = str(info.value)
    assert "[1] '[Na+].[Cl-]'" in msg and "unknown_token" in msg
    # a salt whose largest fragment is fine is encoded like that fragment
    z = molvae.encode(model, ["CC(=O)Nc1ccc(O)cc1.Cl", "CC(=O)Nc1ccc(O)cc1"])
    assert _same_rows(z[0], z[1])


def test_encode_nan_keeps_alignment(model):
    items = [GOOD[0]] + [text for text, _ in BAD] + [GOOD[1], GOOD[2]]
    z = molvae.encode(model, items, errors="nan")
    assert z.shape == (len(items), model.config.latent_dim)
    bad_rows = torch.isnan(z).all(1)
    assert bad_rows.tolist() == [False] + [True] * len(BAD) + [False, False]
    assert torch.isfinite(z[~bad_rows]).all()
    assert _same_rows(z[~bad_rows], molvae.encode(model, GOOD))


def test_encode_errors_argument_and_types(model):
    with pytest.raises(ValueError, match="errors"):
        molvae.encode(model, ["CCO"], errors="bogus")
    with pytest.raises(TypeError):
        molvae.encode(model, "CCO")
    with pytest.raises(TypeError):
        molvae.encode(model, Chem.MolFromSmiles("CCO"))


def test_encode_sample_posterior_is_seeded(model):
    a = molvae.encode(model, GOOD, sample_posterior=True, seed=1)
    assert torch.equal(a, molvae.encode(model, GOOD, sample_posterior=True, seed=1))
    assert not torch.equal(a, molvae.encode(model, GOOD))


# ------------------------------------------------------------------------------ reconstruct
def test_reconstruct_keeps_length_and_marks_bad_inputs(model):
    items = ["CCO", "xyz", None, "c1ccccc1", "C*"]
    out = molvae.reconstruct(model, items)
    assert len(out) == len(items)
    assert out[1] is None and out[2] is None and out[4] is None
    for i in (0, 3):
        assert out[i] is None or _canonical(out[i]) == out[i]
    assert molvae.reconstruct(model, items) == out
    assert molvae.reconstruct(model, []) == []
    assert molvae.reconstruct(model, ["xyz"]) == [None]
    with pytest.raises(TypeError):
        molvae.reconstruct(model, "CCO")


def test_reconstruction_rate_counts_exact_round_trips_and_bad_inputs_as_misses(model):
    good = GOOD + ["CCN", "CC(C)O", "c1ccncc1", "OCCO"]
    back = molvae.reconstruct(model, good)
    hits = sum(b == _canonical(g) for b, g in zip(back, good))
    assert molvae.reconstruction_rate(model, good) == hits / len(good)
    with_bad = good + ["xyz", None, "C*"]
    assert molvae.reconstruction_rate(model, with_bad) == hits / len(with_bad)
    assert molvae.reconstruction_rate(model, ["xyz"]) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        molvae.reconstruction_rate(model, [])


def test_active_units_is_the_count_of_varying_posterior_means(model):
    mols = GOOD + ["CCN", "CC(C)O", "c1ccncc1", "OCCO", "xyz"]
    z = molvae.encode(model, mols[:-1])
    expected = int((z.var(0) > 0.01).sum())
    assert molvae.active_units(model, mols) == expected
    assert molvae.active_units(model, mols, threshold=-1.0) == model.config.latent_dim
    assert molvae.active_units(model, mols, threshold=1e9) == 0
    with pytest.raises(ValueError, match="at least two"):
        molvae.active_units(model, ["CCO", "xyz"])


# ------------------------------------------------------------------------------ interpolate
@pytest.mark.parametrize("method", ["linear", "slerp"])
@pytest.mark.parametrize("steps", [2, 5])
def test_interpolate_returns_steps_items(model, method, steps):
    out = molvae.interpolate(model, "CCO", "c1ccccc1", steps=steps, method=method)
    assert len(out) == steps
    assert all(s is None or _canonical(s) == s for s in out)
    assert out == molvae.interpolate(model, "CCO", "c1ccccc1", steps=steps, method=method)


def test_interpolate_ends_are_the_inputs_or_their_decodes(model):
    z = molvae.encode(model, ["CCO", "c1ccccc1"])
    path = molvae.interpolate(model, "OCC", "c1ccccc1", steps=3, method="linear")
    assert [path[0], path[-1]] == ["CCO", "c1ccccc1"]  # standardized inputs
    decoded = molvae.interpolate(model, "OCC", "c1ccccc1", steps=3, method="linear",
                                 ends="decoded")
    assert [decoded[0], decoded[-1]] == molvae.decode(model, z)
    assert decoded[1] == path[1]
    with pytest.raises(ValueError, match="ends"):
        molvae.interpolate(model, "CCO", "CCN", ends="both")


def test_interpolate_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="steps"):
        molvae.interpolate(model, "CCO", "CCN", steps=1)
    with pytest.raises(ValueError, match="method"):
        molvae.interpolate(model, "CCO", "CCN", method="cubic")
    with pytest.raises(MoleculeError, match="xyz"):
        molvae.interpolate(model, "CCO", "xyz", steps=3)


# ------------------------------------------------------------------------------- neighbours
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_neighbours(model, short_model, temperature):
    # greedy decodes of the 30-step tiny run are long chains: the short model keeps them quick
    m = short_model if temperature == 0.0 else model
    query = "OCC"  # not canonical: the canonical form CCO must still be excluded
    out = molvae.neighbours(m, query, n=6, scale=1.0, seed=0, temperature=temperature)
    assert len(out) <= 6
    if temperature > 0:
        assert out, "sampled decodes of the tiny model should give some neighbours"
    sims = [sim for _, sim in out]
    assert sims == sorted(sims, reverse=True)
    assert all(0.0 <= sim <= 1.0 for sim in sims)
    names = [s for s, _ in out]
    assert "CCO" not in names and query not in names
    assert len(set(names)) == len(names)
    assert all(isinstance(s, str) and s and _canonical(s) == s for s in names)
    assert molvae.neighbours(m, query, n=6, scale=1.0, seed=0, temperature=temperature) == out


def test_neighbours_rejects_bad_query(model):
    with pytest.raises(MoleculeError):
        molvae.neighbours(model, "xyz", n=3, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        molvae.neighbours(model, "CCO", n=0)


# ------------------------------------------------------------------------------------- elbo
def test_elbo_parts_and_invalid_inputs(model):
    items = ["CCO", "xyz", "c1ccccc1", None, "C" * 200]
    res = molvae.elbo(model, items, n_samples=4, seed=0)
    assert set(res) == {"neg_elbo", "recon", "kl"}
    for key in res:
        assert isinstance(res[key], np.ndarray) and res[key].shape == (len(items),)
        assert np.isnan(res[key][[1, 3, 4]]).all(), key
    ok = [0, 2]
    for key in res:
        assert np.isfinite(res[key][ok]).all() and (res[key][ok] > 0).all(), key
    np.testing.assert_allclose(res["neg_elbo"][ok], res["recon"][ok] + res["kl"][ok])


def test_elbo_seeded(model):
    a = molvae.elbo(model, GOOD, n_samples=3, seed=7)
    b = molvae.elbo(model, GOOD, n_samples=3, seed=7)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = molvae.elbo(model, GOOD, n_samples=3, seed=8)
    assert not np.array_equal(a["recon"], c["recon"])
    np.testing.assert_allclose(a["kl"], c["kl"], rtol=1e-6)  # KL is analytic: no sampling


def test_elbo_of_a_molecule_does_not_depend_on_the_others(model):
    """A per-molecule anomaly score: the score of CCO must not change when other molecules
    are scored in the same call (e.g. another row of the same input file)."""
    alone = molvae.elbo(model, ["CCO"], n_samples=4, seed=0)["neg_elbo"][0]
    with_others = molvae.elbo(model, ["c1ccccc1", "CCO", "CCN"], n_samples=4,
                              seed=0)["neg_elbo"][1]
    assert math.isclose(alone, with_others, rel_tol=1e-5), (alone, with_others)


def test_elbo_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="n_samples"):
        molvae.elbo(model, ["CCO"], n_samples=0)
    with pytest.raises(TypeError):
        molvae.elbo(model, "CCO")



def test_prepare_inputs_in_worker_processes_matches_in_process(model, moses_smiles):
    """At or above parallel.MIN_PARALLEL items standardization runs on a process pool: the
    same ids, SMILES, notes and problems (with their global indices) as in this process."""
    from molvae import parallel
    from molvae.generate import prepare_inputs
    items = (list(moses_smiles) * 3)[: parallel.MIN_PARALLEL]
    items[5], items[-3] = "not a molecule", "[Si](C)(C)C"
    pooled = prepare_inputs(model, items, jobs=2)
    inline = prepare_inputs(model, items, jobs=1)
    assert pooled == inline
    assert [i for i, *_ in pooled.problems][:1] == [5]
    assert len(pooled.problems) >= 2 and pooled.problems[-1][0] == len(items) - 3
