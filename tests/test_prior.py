"""Sampling densities over z: the diagonal Gaussian mixture, and a model that samples from it."""

from __future__ import annotations

import math

import pytest
import torch

import molvae
from molvae import ModelConfig
from molvae import checkpoint as ckpt
from molvae.checkpoint import Model
from molvae.chem import prepare
from molvae.generate import sample_latent
from molvae.model import MolVAE
from molvae.prior import fit_gmm, gmm_log_prob
from molvae.vocab import Vocab

TRUE_WEIGHTS = torch.tensor([0.3, 0.7])
TRUE_MEANS = torch.tensor([[-4.0, 1.0], [3.0, -2.0]])
TRUE_STD = torch.tensor([[0.5, 1.0], [1.0, 0.4]])


def _mixture_data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(TRUE_WEIGHTS, n, replacement=True, generator=g)
    return TRUE_MEANS[comp] + torch.randn(n, 2, generator=g) * TRUE_STD[comp]


def _matched(fit: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fitted components in the order of the true ones (nearest mean)."""
    order = [int((fit["means"] - m).norm(dim=1).argmin()) for m in TRUE_MEANS]
    assert sorted(order) == [0, 1], fit["means"]
    return {k: v[order] for k, v in fit.items()}


def test_fit_gmm_recovers_a_known_mixture():
    x = _mixture_data(4000)
    fit = fit_gmm(x, n_components=2, iters=200, seed=0)
    assert fit["weights"].shape == (2,)
    assert fit["means"].shape == (2, 2) and fit["log_std"].shape == (2, 2)
    assert all(v.dtype == torch.float32 for v in fit.values())
    assert math.isclose(float(fit["weights"].sum()), 1.0, abs_tol=1e-5)
    m = _matched(fit)
    torch.testing.assert_close(m["means"], TRUE_MEANS, atol=0.1, rtol=0)
    torch.testing.assert_close(m["weights"], TRUE_WEIGHTS, atol=0.03, rtol=0)
    torch.testing.assert_close(m["log_std"].exp(), TRUE_STD, atol=0.08, rtol=0)


def test_fit_gmm_is_seeded():
    x = _mixture_data(500, seed=1)
    a = fit_gmm(x, n_components=3, iters=20, seed=4)
    b = fit_gmm(x, n_components=3, iters=20, seed=4)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fit_gmm_more_components_than_points():
    x = _mixture_data(5, seed=2)
    fit = fit_gmm(x, n_components=64, iters=5)
    assert fit["means"].shape == (5, 2)
    assert all(torch.isfinite(v).all() for v in fit.values())


def test_gmm_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    means = torch.randn(3, 3, generator=g, dtype=torch.float64)
    log_std = 0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    got = gmm_log_prob(x, weights, means, log_std)
    assert got.shape == (7, 3)
    comps = torch.distributions.Independent(torch.distributions.Normal(means, log_std.exp()), 1)
    want = comps.log_prob(x[:, None, :]) + weights.log()[None, :]
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
    # the mixture density, through MixtureSameFamily
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(weights), comps)
    torch.testing.assert_close(torch.logsumexp(got, 1), mix.log_prob(x), atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------------ a model with a gmm prior
@pytest.fixture
def gmm_model() -> Model:
    """An untrained 2-D latent model (no training needed) sampling from a fitted mixture."""
    selfies = [prepare(s).selfies for s in ("CCO", "c1ccccc1", "CC(=O)N", "CCCl")]
    vocab = Vocab.build(selfies)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=8, enc_hidden=8, dec_hidden=16,
                      latent_dim=2, max_len=12)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = MolVAE(cfg).eval()
    prior = fit_gmm(_mixture_data(2000), n_components=2, iters=100)
    return Model(net, vocab, cfg, prior={"kind": "gmm"}, prior_tensors=prior)


def test_sample_latent_draws_from_the_gmm(gmm_model):
    z = sample_latent(gmm_model, 4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, 2) and z.dtype == torch.float32
    # every point belongs clearly to one of the two components; weights and means recovered
    t = gmm_model.prior_tensors
    near = (z[:, None, :] - t["means"][None]).norm(dim=2).argmin(1)
    for k in range(2):
        part = z[near == k]
        assert math.isclose(len(part) / len(z), float(t["weights"][k]), abs_tol=0.03)
        torch.testing.assert_close(part.mean(0), t["means"][k], atol=0.1, rtol=0)
    # N(0, I) would put the mean near the origin; the mixture does not
    assert float(z.mean(0).norm()) > 1.0
    z2 = sample_latent(gmm_model, 4000, torch.Generator().manual_seed(0))
    assert torch.equal(z, z2)


def test_normal_prior_is_standard_normal(gmm_model):
    normal = Model(gmm_model.net, gmm_model.vocab, gmm_model.config)
    z = sample_latent(normal, 4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=0.08, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=0.08, rtol=0)


def test_unknown_prior_kind_is_an_error(gmm_model):
    odd = Model(gmm_model.net, gmm_model.vocab, gmm_model.config, prior={"kind": "vine"})
    with pytest.raises(ValueError, match="vine"):
        sample_latent(odd, 3, torch.Generator().manual_seed(0))


def test_gmm_prior_survives_save_and_load(gmm_model, tmp_path):
    path = tmp_path / "gmm.safetensors"
    ckpt.save(gmm_model, path)
    back = ckpt.load(path)
    assert back.prior == {"kind": "gmm"}
    assert set(back.prior_tensors) == set(gmm_model.prior_tensors)
    for k, v in gmm_model.prior_tensors.items():
        assert torch.equal(back.prior_tensors[k], v), k
        assert back.prior_tensors[k].dtype == v.dtype
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sample_latent(back, 50, g1), sample_latent(gmm_model, 50, g2))
    assert (molvae.sample(back, 20, seed=1) == molvae.sample(gmm_model, 20, seed=1))
    assert len(molvae.sample(back, 20, seed=1)) == 20


def test_scaled_prior_shrinks_draws_around_each_component(gmm_model, tmp_path):
    """scale 0.5 halves each component's spread around its mean (the same noise, so point for
    point), survives save and load, and leaves log_prob that of the fitted density."""
    half = molvae.prior.scaled(gmm_model, 0.5)
    assert half.prior["scale"] == 0.5 and "scale" not in gmm_model.prior
    z1 = sample_latent(gmm_model, 3000, torch.Generator().manual_seed(0))
    z2 = sample_latent(half, 3000, torch.Generator().manual_seed(0))
    t = gmm_model.prior_tensors
    near = (z1[:, None, :] - t["means"][None]).norm(dim=2).argmin(1)
    torch.testing.assert_close(z2 - t["means"][near], 0.5 * (z1 - t["means"][near]))
    path = tmp_path / "half.safetensors"
    ckpt.save(half, path)
    back = ckpt.load(path)
    assert back.prior["scale"] == 0.5
    assert torch.equal(sample_latent(back, 50, torch.Generator().manual_seed(3)),
                       sample_latent(half, 50, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(molvae.prior.log_prob(half, z1),
                               molvae.prior.log_prob(gmm_model, z1))
    # scale 1 is the plain density again; nonsense scales are refused with the reason
    assert "scale" not in molvae.prior.scaled(half, 1.0).prior
    for bad in (0, -1.0, float("nan"), float("inf"), "0.5", True):
        with pytest.raises(ValueError, match="finite number > 0"):
            molvae.prior.scaled(gmm_model, bad)


def test_scaled_normal_prior_has_that_spread(gmm_model):
    normal = molvae.prior.scaled(Model(gmm_model.net, gmm_model.vocab, gmm_model.config), 0.7)
    z = sample_latent(normal, 4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.std(0), torch.full((2,), 0.7), atol=0.04, rtol=0)


def test_a_checkpoint_with_a_bad_scale_fails_clearly(gmm_model):
    odd = Model(gmm_model.net, gmm_model.vocab, gmm_model.config,
                prior={"kind": "gmm", "scale": -2}, prior_tensors=gmm_model.prior_tensors)
    with pytest.raises(ValueError, match="scale must be a finite number > 0, got -2"):
        sample_latent(odd, 3, torch.Generator().manual_seed(0))
