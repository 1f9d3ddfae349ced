"""Sampling densities over z, fitted to the aggregate posterior of the training set.

A VAE trained with a small KL weight leaves regions of N(0, I) that no training molecule maps
to; latent points drawn there decode to molecules unlike the data. Fitting a density to where
the training molecules actually sit (an "ex-post" density, Ghosh et al. 2020) and drawing from
it instead is cheap, and which density a model samples from is stored in its checkpoint.
"""

from __future__ import annotations

import math

import torch

__all__ = ["fit_gmm", "gmm_log_prob"]


def gmm_log_prob(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor,
                 log_std: torch.Tensor) -> torch.Tensor:
    """Per-point, per-component log(w_k N(x; m_k, diag s_k^2)): (N, K)."""
    var = (2 * log_std).exp()  # (K, D)
    d = x.shape[1]
    # expand ||(x - m) / s||^2 without materialising (N, K, D)
    quad = ((x.pow(2) @ (1 / var).T) - 2 * (x @ (means / var).T)
            + (means.pow(2) / var).sum(1)[None, :])
    log_norm = -0.5 * d * math.log(2 * math.pi) - log_std.sum(1)
    return weights.clamp_min(1e-12).log()[None, :] + log_norm[None, :] - 0.5 * quad


def fit_gmm(x: torch.Tensor, n_components: int = 64, iters: int = 100, seed: int = 0,
            min_std: float = 1e-2, tol: float = 1e-4) -> dict[str, torch.Tensor]:
    """Diagonal-covariance Gaussian mixture by EM (k-means++-style start). x: (N, D)."""
    x = x.double()
    n, d = x.shape
    k = min(n_components, n)
    g = torch.Generator().manual_seed(seed)
    # k-means++ seeding: spread the initial means over the data
    means = x[torch.randint(n, (1,), generator=g)]
    dist = (x - means[0]).pow(2).sum(1)
    for _ in range(1, k):
        nxt = torch.multinomial((dist / dist.sum()).float(), 1, generator=g)
        means = torch.cat([means, x[nxt]])
        dist = torch.minimum(dist, (x - x[nxt]).pow(2).sum(1))
    log_std = x.std(0).log().expand(k, d).clone()
    weights = torch.full((k,), 1.0 / k, dtype=x.dtype)
    prev = -math.inf
    for _ in range(iters):
        lp = gmm_log_prob(x, weights, means, log_std)  # (N, K)
        ll = torch.logsumexp(lp, 1)
        resp = (lp - ll[:, None]).exp()  # E step
        nk = resp.sum(0) + 1e-10  # M step
        weights = nk / n
        means = (resp.T @ x) / nk[:, None]
        var = (resp.T @ x.pow(2)) / nk[:, None] - means.pow(2)
        log_std = 0.5 * var.clamp_min(min_std ** 2).log()
        cur = float(ll.mean())
        if cur - prev < tol:
            break
        prev = cur
    return {"weights": weights.float(), "means": means.float(), "log_std": log_std.float()}
