"""Densities over the latent space: N(0, I), diagonal Gaussian mixtures and a coupling flow.

Each density is a plain description (``{"kind": ..., **settings}``) plus a dict of tensors, the
form a checkpoint stores it in (``Model.prior`` and ``Model.prior_tensors``). This module knows
nothing of models or molecules: :mod:`molvae.prior` fits densities to a model's posteriors,
:mod:`molvae.generate` draws from them.

The flow is a RealNVP-style stack of affine coupling layers (Dinh et al. 2017): each layer keeps
half of the (standardized) coordinates and shifts and scales the other half by a small MLP of
the kept half, so both directions and the log-determinant are exact and cheap. It is the
expressive density of issue-style comparisons next to far larger mixtures.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["KINDS", "check_kind", "check_scale", "sample", "log_prob", "fit_gmm", "gmm_log_prob",
           "CouplingFlow", "fit_flow"]

KINDS = ("normal", "gmm", "flow")


# ------------------------------------------------------------------------ Gaussian mixtures
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


def _kmeans_pp(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: k data points spread over the data, (k, D)."""
    n = x.shape[0]
    means = x[torch.randint(n, (1,), generator=g)]
    dist = (x - means[0]).pow(2).sum(1)
    for _ in range(1, k):
        nxt = torch.multinomial((dist / dist.sum()).float(), 1, generator=g)
        means = torch.cat([means, x[nxt]])
        dist = torch.minimum(dist, (x - x[nxt]).pow(2).sum(1))
    return means


def fit_gmm(x: torch.Tensor, n_components: int = 64, iters: int = 100, seed: int = 0,
            min_std: float = 1e-2, tol: float = 1e-4, batch: int = 50_000
            ) -> dict[str, torch.Tensor]:
    """Diagonal-covariance Gaussian mixture by EM (k-means++ start). x: (N, D).

    The E step runs over ``batch`` points at a time, so memory stays at batch x K."""
    x = x.double()
    n, d = x.shape
    k = min(n_components, n)
    g = torch.Generator().manual_seed(seed)
    means = _kmeans_pp(x, k, g)
    log_std = x.std(0).log().expand(k, d).clone()
    weights = torch.full((k,), 1.0 / k, dtype=x.dtype)
    prev = -math.inf
    for _ in range(iters):
        nk = torch.zeros(k, dtype=x.dtype)
        s1 = torch.zeros(k, d, dtype=x.dtype)
        s2 = torch.zeros(k, d, dtype=x.dtype)
        total = 0.0
        for s in range(0, n, batch):
            xb = x[s: s + batch]
            lp = gmm_log_prob(xb, weights, means, log_std)  # (B, K)
            ll = torch.logsumexp(lp, 1)
            resp = (lp - ll[:, None]).exp()  # E step
            nk += resp.sum(0)
            s1 += resp.T @ xb
            s2 += resp.T @ xb.pow(2)
            total += float(ll.sum())
        nk = nk + 1e-10  # M step
        weights = nk / n
        means = s1 / nk[:, None]
        log_std = 0.5 * (s2 / nk[:, None] - means.pow(2)).clamp_min(min_std ** 2).log()
        cur = total / n
        if cur - prev < tol:
            break
        prev = cur
    return {"weights": weights.float(), "means": means.float(), "log_std": log_std.float()}


# ------------------------------------------------------------------------------------ flow
class _Coupling(nn.Module):
    """One affine coupling layer: x[~mask] -> x[~mask] * exp(s(x[mask])) + t(x[mask])."""

    def __init__(self, mask: torch.Tensor, hidden: int):
        super().__init__()
        d = mask.numel()
        self.register_buffer("mask", mask.float())
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, 2 * d))
        nn.init.zeros_(self.net[-1].weight)  # start at the identity
        nn.init.zeros_(self.net[-1].bias)

    def _st(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(kept).chunk(2, dim=1)  # (N, D) each
        free = 1 - self.mask
        return torch.tanh(s) * 2.0 * free, t * free  # scales bounded to e^+-2 per layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """data -> base direction: (y, log|det dy/dx|)."""
        s, t = self._st(x * self.mask)
        return x * s.exp() + t, s.sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._st(y * self.mask)  # the kept half is unchanged, so s and t are the same
        return (y - t) * (-s).exp()


class CouplingFlow(nn.Module):
    """Standardize, then ``layers`` affine couplings with random half masks; base N(0, I)."""

    def __init__(self, dim: int, layers: int = 8, hidden: int = 256, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        masks = []
        for i in range(layers):
            if i % 2 == 0:  # a fresh random half, then its complement, so every pair
                perm = torch.randperm(dim, generator=g)  # of layers transforms every coordinate
                m = torch.zeros(dim)
                m[perm[: dim // 2]] = 1
            else:
                m = 1 - masks[-1]
            masks.append(m)
        with torch.random.fork_rng(devices=[]):  # seeded weights, the global RNG untouched
            torch.manual_seed(seed)
            self.layers = nn.ModuleList(_Coupling(m, hidden) for m in masks)
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("log_scale", torch.zeros(dim))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x): (N,)."""
        y = (x - self.loc) * (-self.log_scale).exp()
        logdet = -self.log_scale.sum().expand(x.shape[0])
        for layer in self.layers:
            y, ld = layer(y)
            logdet = logdet + ld
        base = -0.5 * (y.pow(2).sum(1) + y.shape[1] * math.log(2 * math.pi))
        return base + logdet

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        """Base points (N, D) -> data points."""
        y = eps
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y * self.log_scale.exp() + self.loc

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"flow.{k}": v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_tensors(cls, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> CouplingFlow:
        """The flow a checkpoint stores (built once per set of tensors, then reused)."""
        state = {k[5:]: v for k, v in tensors.items() if k.startswith("flow.")}
        loc = state.get("loc")
        if loc is None:
            raise ValueError("the checkpoint's flow density has no parameters (prior.flow.* "
                             "tensors missing)")
        cached = _FLOWS.get(id(loc))
        if cached is not None and cached[0]() is loc:
            return cached[1]
        try:
            flow = cls(int(loc.numel()), int(info["layers"]), int(info["hidden"]))
            flow.load_state_dict(state)
        except (KeyError, RuntimeError) as e:
            raise ValueError(f"the checkpoint's flow density does not match its settings "
                             f"{ {k: v for k, v in info.items() if k != 'fit'} }: {e}") from None
        flow = flow.to(loc.device).eval().requires_grad_(False)
        _FLOWS[id(loc)] = (weakref.ref(loc), flow)
        weakref.finalize(loc, _FLOWS.pop, id(loc), None)
        return flow


# flows built from checkpoint tensors, keyed by their tensors' identity and dropped with them
# (memoization only: building a flow for every block of samples would cost more than drawing)
_FLOWS: dict[int, tuple[weakref.ref, CouplingFlow]] = {}


def fit_flow(x: torch.Tensor, layers: int = 8, hidden: int = 256, steps: int = 4000,
             batch_size: int = 1024, lr: float = 1e-3, weight_decay: float = 1e-5,
             val_frac: float = 0.05, seed: int = 0,
             progress: Callable[[int, float], None] | None = None
             ) -> tuple[CouplingFlow, dict[str, float]]:
    """Maximum-likelihood coupling flow on points x (N, D): Adam with a cosine schedule, the
    parameters of the best held-out log-likelihood kept. Returns the flow (eval mode) and
    ``{"train_nll", "val_nll", "steps"}`` in nats per point."""
    x = x.float()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    n_val = max(1, int(val_frac * x.shape[0])) if x.shape[0] > 20 else 0
    val, tr = x[perm[:n_val]], x[perm[n_val:]]
    flow = CouplingFlow(x.shape[1], layers, hidden, seed)
    flow.loc.copy_(tr.mean(0))
    flow.log_scale.copy_(tr.std(0).clamp_min(1e-3).log())
    opt = torch.optim.AdamW(flow.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    best, best_state, train_nll = math.inf, None, math.nan
    every = max(1, steps // 20)
    for step in range(1, steps + 1):
        flow.train()
        idx = torch.randint(tr.shape[0], (min(batch_size, tr.shape[0]),), generator=g)
        loss = -flow.log_prob(tr[idx]).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        opt.step()
        sched.step()
        train_nll = float(loss.detach())
        if step % every == 0 or step == steps:
            flow.eval()
            with torch.no_grad():
                v = float(-flow.log_prob(val if n_val else tr).mean())
            if v < best:
                best = v
                best_state = {k: t.clone() for k, t in flow.state_dict().items()}
            if progress is not None:
                progress(step, v)
    if best_state is not None:
        flow.load_state_dict(best_state)
    return flow.eval(), {"train_nll": train_nll, "val_nll": best, "steps": steps}


# ------------------------------------------------------------------------ sample, log_prob
def check_kind(info: dict[str, Any]) -> str:
    """The density's kind; a clear error for one this molvae does not know."""
    kind = info.get("kind", "normal")
    if kind not in KINDS:
        raise ValueError(f"unknown sampling density {kind!r} in the checkpoint (this molvae "
                         f"knows {', '.join(KINDS)}; a newer molvae may have written it)")
    return kind


def check_scale(info: dict[str, Any]) -> float:
    """The density's sampling scale (1.0 when the description has none); a clear error for one
    that is not a finite number > 0."""
    scale = info.get("scale", 1.0)
    if (isinstance(scale, bool) or not isinstance(scale, (int, float))
            or not math.isfinite(scale) or scale <= 0):
        raise ValueError(f"a sampling density's scale must be a finite number > 0, got "
                         f"{scale!r}")
    return float(scale)


def sample(info: dict[str, Any], tensors: dict[str, torch.Tensor], n: int, dim: int,
           generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """n points (n, dim) from the density ``info`` with parameters ``tensors``.

    ``info["scale"]`` (default 1) shrinks or widens the draws: the standard-normal noise each
    point is made from is multiplied by it (for N(0, I) the spread itself, for a mixture each
    component's spread around its mean, for the flow its base density, as Glow's
    "temperature"). :func:`log_prob` stays that of the fitted density."""
    kind = check_kind(info)
    eps = torch.randn((n, dim), generator=generator, device=device) * check_scale(info)
    if kind == "normal":
        return eps
    if kind == "gmm":
        comp = torch.multinomial(tensors["weights"].float(), n, replacement=True,
                                 generator=generator)
        return tensors["means"][comp].float() + eps * tensors["log_std"][comp].float().exp()
    with torch.no_grad():
        return CouplingFlow.from_tensors(info, tensors).transform(eps)


def log_prob(info: dict[str, Any], tensors: dict[str, torch.Tensor], z: torch.Tensor
             ) -> torch.Tensor:
    """log density of points z (N, D): (N,). Differentiable in z (for gradient penalties)."""
    kind = check_kind(info)
    z = z.float()
    if kind == "normal":
        return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi))
    if kind == "gmm":
        return torch.logsumexp(gmm_log_prob(z, tensors["weights"].float(),
                                            tensors["means"].float(),
                                            tensors["log_std"].float()), 1)
    return CouplingFlow.from_tensors(info, tensors).log_prob(z)
