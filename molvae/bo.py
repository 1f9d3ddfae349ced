"""Trust-region Bayesian optimization in latent space (TuRBO, Eriksson et al. 2019; as used on
VAE latents by LOLBO, Maus et al. 2022), built on BoTorch.

Each round fits an exact GP (BoTorch's ``SingleTaskGP``: RBF kernel with ARD length-scales and
the dimension-scaled length-scale prior) on a subset of the observations -- the ``n_gp`` nearest
the trust region's centre -- so a fit's size stays bounded however many molecules were scored. The
observations are the posterior means of the *decoded* molecules (see :mod:`molvae.search`), not
the proposed points. A batch is chosen by Thompson sampling over candidates drawn in the trust
region (a box around the best molecule, stretched along each dimension by the GP's length-scale)
or, with ``acquisition="logei"``, by maximising qLogEI inside it. The box grows after repeated
successes, shrinks after failures, and restarts from fresh samples of the model's sampling
density when it has shrunk below ``length_min`` or when a batch finds (almost) no molecule
not seen before.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .search import Search

__all__ = ["turbo", "TrustRegion"]

log = logging.getLogger(__name__)


@dataclass
class TrustRegion:
    """TuRBO's box state; lengths are in units of the observations' per-dimension spread."""

    length: float = 0.8
    length_min: float = 0.5 ** 7
    length_max: float = 1.6
    success_tol: int = 3
    failure_tol: int = 4
    successes: int = 0
    failures: int = 0
    best: float = -math.inf

    def update(self, batch_best: float) -> None:
        if batch_best > self.best + 1e-3 * abs(self.best):
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        if self.successes >= self.success_tol:
            self.length, self.successes = min(2.0 * self.length, self.length_max), 0
        elif self.failures >= self.failure_tol:
            self.length, self.failures = self.length / 2.0, 0
        self.best = max(self.best, batch_best)

    @property
    def collapsed(self) -> bool:
        return self.length < self.length_min


def _fit_gp(x: torch.Tensor, y: torch.Tensor, warm: dict | None = None, maxiter: int = 100):
    """An exact GP on (x, y) in float64, inputs already scaled; y standardized by BoTorch.

    ``warm`` holds the previous round's hyper-parameters: L-BFGS starts from them, and its
    iterations are capped at ``maxiter``, so a refit does not start over for 64 length-scales
    every round.
    """
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")  # BoTorch's numerical / input-scaling advice
        torch.manual_seed(0)  # any retry the fit makes draws from here, not the caller's stream
        gp = SingleTaskGP(x, y[:, None])
        if warm is not None:
            gp.load_state_dict({k: v for k, v in warm.items() if "outcome_transform" not in k},
                               strict=False)
        mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": maxiter}})
    gp.eval()
    return gp


def _lengthscale_weights(gp, d: int) -> torch.Tensor:
    ls = gp.covar_module.lengthscale.detach().reshape(-1)
    if ls.numel() != d:
        ls = ls.expand(d)
    return ls / ls.log().mean().exp()  # geometric mean 1, as TuRBO


def _candidates(center: torch.Tensor, weights: torch.Tensor, length: float, n: int,
                gen: torch.Generator) -> torch.Tensor:
    """n points in the box center +- weights * length / 2, perturbing a random subset of
    dimensions per point (TuRBO's perturbation mask: about 20 dimensions at a time)."""
    d = center.shape[0]
    half = weights * length / 2.0
    pert = center + (2 * torch.rand((n, d), generator=gen, dtype=center.dtype) - 1) * half
    prob = min(1.0, 20.0 / d)
    mask = torch.rand((n, d), generator=gen) < prob
    mask[mask.sum(1) == 0, torch.randint(d, (1,), generator=gen)] = True
    return torch.where(mask, pert, center.expand(n, d))


def _thompson(gp, cand: torch.Tensor, q: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q distinct candidates, each the argmax of one joint posterior sample."""
    with torch.no_grad(), torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)  # inside fork_rng: the caller's global stream is untouched
        post = gp.posterior(cand)
        draws = post.rsample(torch.Size([q])).squeeze(-1)  # (q, n)
        mean = post.mean.squeeze(-1)
    chosen: list[int] = []
    for row in draws:
        for idx in torch.argsort(row, descending=True).tolist():
            if idx not in chosen:
                chosen.append(idx)
                break
    pick = torch.as_tensor(chosen)
    return cand[pick], mean[pick]


def _logei(gp, y_best: float, lo: torch.Tensor, hi: torch.Tensor, q: int, seed: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.optim import optimize_acqf

    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        acq = qLogExpectedImprovement(gp, best_f=y_best)
        x, _ = optimize_acqf(acq, bounds=torch.stack([lo, hi]), q=q, num_restarts=4,
                             raw_samples=256, options={"maxiter": 50})
        with torch.no_grad():
            mean = gp.posterior(x).mean.squeeze(-1)
    return x.detach(), mean


def _propose(gp, center: torch.Tensor, length: float, acquisition: str, batch: int,
             n_candidates: int, y_best: float, gen: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The next batch in the box around ``center`` and the GP's mean prediction for it."""
    w = _lengthscale_weights(gp, center.shape[0])
    seed = int(torch.randint(2**62, (1,), generator=gen))
    if acquisition == "ts":
        return _thompson(gp, _candidates(center, w, length, n_candidates, gen), batch, seed)
    half = w * length / 2.0
    return _logei(gp, y_best, center - half, center + half, batch, seed)


def turbo(search: Search, *, batch: int = 100, init: int = 200, n_gp: int = 500,
          n_candidates: int = 2000, acquisition: str = "ts", length_init: float = 0.8,
          failure_tol: int | None = None, reencode: bool = True) -> None:
    """Run TuRBO until the search is done (see the module docstring).

    Args:
        batch: latent points proposed per round.
        init: points drawn from the sampling density first (when nothing was given to start).
        n_gp: observations the GP is fitted on (the nearest to the trust region's centre).
        n_candidates: Thompson-sampling candidates per round.
        acquisition: ``"ts"`` (Thompson sampling) or ``"logei"`` (qLogEI).
        length_init: the box's starting side, in units of the per-dimension spread.
        failure_tol: failed rounds before the box halves (default TuRBO's
            ceil(max(4 / batch, dim / batch))).
        reencode: fit the GP on the posterior means of the decoded molecules (True) or on
            the proposed points (False, for comparison).
    """
    search.reencode = reencode
    if acquisition not in ("ts", "logei"):
        raise ValueError(f"acquisition must be 'ts' or 'logei', got {acquisition!r}")
    d = search.z_dim
    if not len(search.observed()[1]):
        search.evaluate(search.sample_prior(init))
    tol = failure_tol or math.ceil(max(4.0 / batch, d / batch))
    tr = TrustRegion(length=length_init, failure_tol=tol)
    x_all, _ = search.observed()
    if not len(x_all):
        return
    shift = x_all.double().mean(0)
    scale = x_all.double().std(0).clamp_min(1e-3) * 4.0  # the box is in units of ~4 std
    warm = None
    since = 0  # the trust region is centred on the best molecule seen since `since`
    while not search.done:
        x_all = search.z_mol.double()
        y_all = search.scores.copy()
        if not np.isfinite(y_all).any():
            search.evaluate(search.sample_prior(batch))
            continue
        y_all[~np.isfinite(y_all)] = np.nanmin(y_all)  # infeasible/failed: the worst seen
        u_all = (x_all - shift) / scale
        best_i = since + int(np.argmax(y_all[since:])) if len(y_all) > since else \
            int(np.argmax(y_all))
        tr.best = max(tr.best, float(y_all[best_i]))
        center = u_all[best_i]
        near = torch.argsort((u_all - center).pow(2).sum(1))[:n_gp]
        gp = _fit_gp(u_all[near], torch.as_tensor(y_all[near.numpy()], dtype=torch.float64),
                     warm)
        warm = {k: v for k, v in gp.state_dict().items() if "train" not in k}
        u_next, pred = _propose(gp, center, tr.length, acquisition, batch, n_candidates,
                                float(y_all[near.numpy()].max()), search.gen)
        z_next = (u_next * scale + shift).float()
        out = search.evaluate(z_next, predicted=pred.numpy())
        finite = out.scores[np.isfinite(out.scores)]
        tr.update(float(finite.max()) if len(finite) else -math.inf)
        log.debug("length %.3g, best %.4g, calls %d", tr.length, tr.best, search.oracle.calls)
        if out.novel < max(1, batch // 20):
            # the box decodes to molecules already seen: shrinking it cannot help
            tr.length = 0.0
        if tr.collapsed:  # restart: a fresh region from the sampling density
            since = len(search.scores)
            fresh = search.evaluate(search.sample_prior(batch))
            tr = TrustRegion(length=length_init, failure_tol=tol)
            finite = fresh.scores[np.isfinite(fresh.scores)]
            tr.best = float(finite.max()) if len(finite) else -math.inf
