"""molvae.gradient (the "gradient" optimizer) and the differentiable decode/encode it uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import molvae
from molvae.config import ModelConfig
from molvae.gradient import LatentHead, gradient_ascent, sequence_features
from molvae.model import EOS, MolVAE
from molvae.optimize import optimize

T_MAX = 5


def tiny_net(seed: int = 0) -> MolVAE:
    """A float64 MolVAE small enough for finite differences, weights from a local seed."""
    cfg = ModelConfig(vocab_size=8, embed_dim=4, enc_hidden=8, dec_hidden=8, latent_dim=3,
                      max_len=T_MAX)
    net = MolVAE(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # larger than the default init, so decodes vary with z
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).double())
    return net.double().eval()


def finite_difference(f, z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of a scalar f at every entry of z."""
    grad = torch.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        up, down = z.clone(), z.clone()
        up[idx] += eps
        down[idx] -= eps
        grad[idx] = (f(up) - f(down)) / (2 * eps)
    return grad


def autograd(f, z: torch.Tensor) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(z), z)
    return g


def z_points(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, 3), generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float32).double()


# ------------------------------------------------------------------- decode_relaxed
def test_decode_relaxed_shapes_and_default_steps():
    net = tiny_net()
    logits, tokens = net.decode_relaxed(z_points(4))
    assert logits.shape == tokens.shape == (4, T_MAX + 1, 8)
    assert torch.allclose(tokens.sum(-1), torch.ones(4, T_MAX + 1, dtype=torch.float64))
    _, short = net.decode_relaxed(z_points(4), steps=2)
    assert short.shape == (4, 2, 8)
    with pytest.raises(ValueError):
        net.decode_relaxed(z_points(1), steps=0)
    with pytest.raises(ValueError):
        net.decode_relaxed(z_points(1), tau=0.0)


def test_decode_relaxed_hard_without_noise_is_greedy_decoding():
    net = tiny_net()
    z = z_points(16)
    _, tokens = net.decode_relaxed(z, hard=True, noise=False)
    ids = tokens.argmax(-1)
    greedy = net.decoder.generate(z, T_MAX + 1, 0.0)
    for row, ref in zip(ids, greedy):
        n = int((ref != 0).sum())  # up to and including [eos]
        assert row[:n].tolist() == ref[:n].tolist()
    assert torch.equal(tokens, tokens.round())  # exact one-hot forward values


def test_decode_relaxed_gumbel_is_seeded():
    net = tiny_net()
    z = z_points(8)
    a = net.decode_relaxed(z, noise=True, generator=torch.Generator().manual_seed(3))[1]
    b = net.decode_relaxed(z, noise=True, generator=torch.Generator().manual_seed(3))[1]
    assert torch.equal(a, b)


@pytest.mark.parametrize("noise", [False, True])
def test_decode_relaxed_gradient_matches_finite_differences(noise):
    """A fixed linear predictor on the soft sequence: d pred / d z through every decode step."""
    net = tiny_net()
    w = torch.randn((T_MAX + 1, 8), generator=torch.Generator().manual_seed(2),
                    dtype=torch.float32).double()

    def f(z: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(5)  # the same noise for every evaluation
        _, y = net.decode_relaxed(z, tau=0.7, generator=gen, hard=False, noise=noise)
        return (y * w).sum()

    z = z_points()
    g = autograd(f, z)
    assert g.abs().max() > 1e-6  # gradient does reach z
    torch.testing.assert_close(g, finite_difference(f, z), rtol=1e-4, atol=1e-8)


def test_decode_relaxed_straight_through_carries_gradient():
    net = tiny_net()
    z = z_points().requires_grad_(True)
    _, y = net.decode_relaxed(z, hard=True, noise=False)
    (y[:, 1:] * torch.arange(8.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# ------------------------------------------------------------------- encode_relaxed
def test_encode_relaxed_of_one_hot_matches_encode():
    net = tiny_net()
    z = z_points(16)
    ids = net.decoder.generate(z, T_MAX + 1, 0.0)
    lengths = (ids != EOS).long().cumprod(1).sum(1).clamp_min(1)
    mu, logvar = net.encode(ids, lengths)
    _, tokens = net.decode_relaxed(z, hard=True, noise=False)
    mu_r, logvar_r = net.encode_relaxed(sequence_features(tokens))
    torch.testing.assert_close(mu_r, mu)
    torch.testing.assert_close(logvar_r, logvar)


def test_limo_chain_gradient_matches_finite_differences():
    """z -> soft decode -> [eos] mask -> encoder -> head: the "limo" predictor's path."""
    net = tiny_net()
    head = LatentHead(3, 16, torch.Generator().manual_seed(4)).double()

    def f(z: torch.Tensor) -> torch.Tensor:
        _, y = net.decode_relaxed(z, tau=0.7, hard=False, noise=False)
        mu, _ = net.encode_relaxed(sequence_features(y))
        return head(mu).sum()

    z = z_points()
    g = autograd(f, z)
    assert g.abs().max() > 1e-6
    torch.testing.assert_close(g, finite_difference(f, z), rtol=1e-4, atol=1e-8)


def test_sequence_features_zeroes_after_first_eos():
    y = torch.nn.functional.one_hot(torch.tensor([[3, 4, EOS, 5, EOS, 6]]), 8).float()
    x = sequence_features(y)
    assert x[0, :3].sum() == 3 and x[0, 3:].sum() == 0


# ------------------------------------------------------------------------- heads
def test_latent_head_gradient_matches_finite_differences():
    head = LatentHead(3, 8, torch.Generator().manual_seed(0)).double()

    def f(z: torch.Tensor) -> torch.Tensor:
        return head(z).sum()

    z = z_points(3)
    torch.testing.assert_close(autograd(f, z), finite_difference(f, z), rtol=1e-4, atol=1e-8)


def test_latent_head_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = LatentHead(3, 8, torch.Generator().manual_seed(0))
    b = LatentHead(3, 8, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    c = LatentHead(3, 8, torch.Generator().manual_seed(1))
    assert not torch.equal(a.net[0].weight, c.net[0].weight)


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def model():
    """The bundled model: the session's tiny trained run decodes (almost) nothing valid, and a
    method can only be seen at work on molecules."""
    return molvae.load()


def _check_run(result, budget: int) -> None:
    assert result.oracle_calls <= budget
    assert len(result.history) == result.oracle_calls
    assert [c.index for c in result.history] == list(range(1, result.oracle_calls + 1))
    proposed = [c for c in result.history if c.predicted is not None]
    assert proposed, "no call came from a gradient step"
    assert all(math.isfinite(c.predicted) for c in proposed)


def test_optimize_gradient_mlp_budget_history_and_seed(model):
    opts = dict(batch=20, starts=5, fit_steps=30)
    a = optimize(model, "qed", method="gradient", budget=60, seed=0, **opts)
    _check_run(a, 60)
    b = optimize(model, "qed", method="gradient", budget=60, seed=0, **opts)
    assert [c.smiles for c in a.history] == [c.smiles for c in b.history]
    assert [c.predicted for c in a.history] == [c.predicted for c in b.history]


def test_optimize_gradient_limo(model):
    r = optimize(model, "qed", method="gradient", budget=30, seed=0, predictor="limo",
                 batch=10, starts=5, steps=2, fit_steps=20)
    _check_run(r, 30)


def test_optimize_gradient_keeps_global_rng(model):
    state = torch.random.get_rng_state()
    optimize(model, "qed", method="gradient", budget=15, seed=1, batch=10, fit_steps=5)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_gradient_rejects_bad_options(model):
    with pytest.raises(ValueError, match="predictor"):
        optimize(model, "qed", method="gradient", budget=5, predictor="gp")
    with pytest.raises(ValueError, match="batch"):
        gradient_ascent(None, batch=0)  # type: ignore[arg-type]
