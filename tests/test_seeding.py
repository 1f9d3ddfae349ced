"""Seeded sampling: molecule i depends only on (seed, i, temperature, model), never on n,
batch_size, threads or the other rows of a decode.

Compared as token ids (exact), on the session's tiny trained run with max_len 20 so that a
decode takes at most 21 steps. Batches of different sizes may round logits differently
(~1e-6 here); a sampled token would flip only where two Gumbel scores tie that closely, which
none of these draws comes near, so equality is required exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import molvae
from molvae.checkpoint import Model
from molvae.generate import BLOCK, fresh_seed, iter_sample, iter_sample_ids
from molvae.prior import fit_gmm

N = 300
SEED = 11


@pytest.fixture(scope="module")
def model(trained_run) -> Model:
    out, _ = trained_run
    m = molvae.load(out)
    return dataclasses.replace(m, config=dataclasses.replace(m.config, max_len=20))


@pytest.fixture(scope="module")
def gmm_model(model) -> Model:
    """The same network sampling from a 3-component mixture away from the origin."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(600, model.config.latent_dim, generator=g) + 2.0
    prior = fit_gmm(z, n_components=3, iters=20, seed=0)
    return dataclasses.replace(model, prior={"kind": "gmm"}, prior_tensors=prior)


def _ids(model: Model, n: int, **kw) -> list[tuple[int, ...]]:
    """The sampled token rows, [eos] included and PAD dropped."""
    return [tuple(int(t) for t in row if t != 0)
            for part in iter_sample_ids(model, n, **kw) for row in part]


@pytest.fixture(scope="module")
def full(model) -> list[tuple[int, ...]]:
    return _ids(model, N, seed=SEED)


def test_block_is_a_constant():
    assert BLOCK == 64  # the k values below straddle its boundaries


@pytest.mark.parametrize("k", [1, 5, 63, 64, 65, 200])
def test_prefix_does_not_depend_on_n(model, full, k):
    assert _ids(model, k, seed=SEED) == full[:k]


def test_samples_vary_and_the_seed_matters(model, full):
    assert len(set(full)) > N // 2, "every row the same: the noise is not per row"
    assert _ids(model, 20, seed=SEED + 1) != full[:20]


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_samples_do_not_depend_on_batch_size(model, full, batch_size):
    assert _ids(model, N, seed=SEED, batch_size=batch_size) == full


def test_smiles_prefix_and_batch_size(model):
    """The same through sample(): SMILES, post-processing included."""
    ref = molvae.sample(model, 130, seed=3, consistent=False)
    assert molvae.sample(model, 5, seed=3, consistent=False) == ref[:5]
    assert molvae.sample(model, 70, seed=3, batch_size=9, consistent=False) == ref[:70]
    parts = list(iter_sample(model, 130, seed=3, batch_size=50, consistent=False))
    assert [len(p) for p in parts] == [50, 50, 30]
    assert [s for p in parts for s in p] == ref


def test_greedy_prefix_and_batch_size(model):
    """Temperature 0 draws only z, from the same blocks: the sampled run's latent points."""
    ref = _ids(model, 150, seed=SEED, temperature=0.0)
    assert _ids(model, 65, seed=SEED, temperature=0.0) == ref[:65]
    assert _ids(model, 150, seed=SEED, temperature=0.0, batch_size=7) == ref
    assert ref != _ids(model, 150, seed=SEED)  # sampling adds token noise


def test_gmm_prior_prefix_and_batch_size(gmm_model, full):
    ref = _ids(gmm_model, 200, seed=SEED)
    assert ref != full[:200], "the mixture should move the latent points"
    assert _ids(gmm_model, 65, seed=SEED) == ref[:65]
    assert _ids(gmm_model, 200, seed=SEED, batch_size=13) == ref


def test_samples_do_not_depend_on_threads(model, full):
    """Two torch threads: two decoding streams, each chunk on whichever is free."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _ids(model, N, seed=SEED, batch_size=40) == full
        assert (molvae.sample(model, 90, seed=3, batch_size=20, consistent=False)
                == molvae.sample(model, 90, seed=3, consistent=False))
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------- decode
def test_decode_rows_do_not_depend_on_batch_size_or_other_rows(model):
    z = torch.randn(150, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    ref = molvae.decode(model, z, temperature=1.0, seed=4)
    for batch_size in (1, 7, 64, 1000):
        assert molvae.decode(model, z, temperature=1.0, seed=4, batch_size=batch_size) == ref
    for k in (1, 63, 64, 65):
        assert molvae.decode(model, z[:k], temperature=1.0, seed=4) == ref[:k]
    # row i's noise belongs to position i, whatever z stands there
    same = z[:1].expand(70, -1)
    out = molvae.decode(model, same, temperature=1.0, seed=4)
    assert out[0] == ref[0] and len(set(out)) > 1
    assert molvae.decode(model, z, temperature=1.0, seed=5) != ref


def test_generate_rows_depend_only_on_their_noise(model):
    """Decoder.generate with pre-drawn noise: a row's tokens do not see the other rows."""
    dec = model.net.decoder
    g = torch.Generator().manual_seed(1)
    z = torch.randn(40, model.config.latent_dim, generator=g)
    noise = torch.rand((40, 21, model.config.vocab_size), generator=g)
    ids = dec.generate(z, 21, 1.0, noise=noise)
    part = dec.generate(z[10:17], 21, 1.0, noise=noise[10:17])
    assert torch.equal(part, ids[10:17, : part.shape[1]])
    assert (ids[10:17, part.shape[1]:] == 0).all()
    with pytest.raises(ValueError, match="noise must have shape"):
        dec.generate(z, 21, 1.0, noise=noise[:, :20])


# ------------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize("bad", [-1, 1.5, 2.0, "3", True])
def test_bad_seeds_are_rejected(model, bad):
    z = torch.zeros(2, model.config.latent_dim)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        molvae.sample(model, 3, seed=bad)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        next(iter_sample(model, 3, seed=bad))
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        molvae.decode(model, z, temperature=1.0, seed=bad)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        molvae.decode(model, z, seed=bad)  # greedy needs no seed, but a bad one is still bad


def test_numpy_and_large_seeds_are_accepted(model):
    assert (molvae.sample(model, 8, seed=np.int64(3), consistent=False)
            == molvae.sample(model, 8, seed=3, consistent=False))
    assert len(molvae.sample(model, 8, seed=2**62 + 1, consistent=False)) == 8


def test_fresh_seed():
    seeds = {fresh_seed() for _ in range(4)}
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)
    assert len(seeds) > 1


def test_no_seed_is_fresh_entropy(model):
    assert _ids(model, 40, seed=None) != _ids(model, 40, seed=None)
