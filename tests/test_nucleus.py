"""Nucleus (top-p) sampling: molvae.model.nucleus, sampling's top_p setting and the CLI flag."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import molvae
from molvae.model import nucleus
from molvae.sampling import sampling_settings


@pytest.fixture(scope="module")
def model() -> molvae.Model:
    return molvae.load()


def test_nucleus_keeps_the_fewest_tokens_reaching_p():
    logits = torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]]))
    kept = torch.isfinite(nucleus(logits, 0.7))
    assert kept[0].tolist() == [False, True, True, False]  # 0.5 + 0.3 reach 0.7
    assert kept[1].sum() == 3  # 0.25 * 3 >= 0.7, two do not
    assert torch.isfinite(nucleus(logits, 0.5))[0].tolist() == [False, True, False, False]
    assert torch.isfinite(nucleus(logits, 1e-9)).sum(1).tolist() == [1, 1]  # the top always
    assert torch.equal(nucleus(logits, 1.0), logits)
    # the temperature sharpens the distribution first: at 0.5 the top token's 0.5 becomes
    # 0.25 / 0.36 = 0.69, enough alone for p = 0.65 (at temperature 1 it needs the 0.3 too)
    assert torch.isfinite(nucleus(logits, 0.65))[0].sum() == 2
    sharp = torch.isfinite(nucleus(logits, 0.65, temperature=0.5))[0]
    assert sharp.tolist() == [False, True, False, False]


def test_tiny_top_p_is_greedy_decoding(model):
    """Only the most likely token survives a tiny nucleus, so sampling is argmax decoding."""
    z = torch.randn(16, model.config.latent_dim, generator=torch.Generator().manual_seed(1))
    dec = model.net.decoder
    steps = model.config.max_len + 1
    with torch.no_grad():
        greedy = dec.generate(z, steps, temperature=0.0)
        tiny = dec.generate(z, steps, temperature=1.0, generator=torch.Generator().manual_seed(0),
                            top_p=1e-6)
        full = dec.generate(z, steps, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy, tiny)
    assert not torch.equal(greedy, full)
    with pytest.raises(ValueError, match="top_p must be in"):
        dec.generate(z, steps, top_p=0.0)


def test_top_p_setting_defaults_overrides_and_checks(model):
    set_model = dataclasses.replace(model, sampling={"temperature": 1.0, "top_p": 0.5})
    assert sampling_settings(set_model, None, None) == (1.0, False, 0.5)
    assert sampling_settings(set_model, None, None, 0.9) == (1.0, False, 0.9)
    assert sampling_settings(dataclasses.replace(model, sampling={}), None, None)[2] == 1.0
    a, stats = molvae.sample(set_model, 8, seed=4, grammar=False, return_stats=True)
    assert stats.top_p == 0.5
    assert molvae.sample(model, 8, seed=4, temperature=1.0, grammar=False, top_p=0.5) == a
    whole = molvae.sample(model, 8, seed=4, temperature=1.0, grammar=False, top_p=1.0)
    assert molvae.sample(set_model, 8, seed=4, grammar=False, top_p=1.0) == whole
    for bad in (0, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="top_p must be a number in"):
            molvae.sample(model, 2, top_p=bad)

