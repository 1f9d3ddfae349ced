"""Gradient ascent in latent space against a learned property predictor (``method="gradient"``).

Two predictors, refitted every round on the molecules scored so far:

- ``"mlp"``: an MLP on z (the property head of Gomez-Bombarelli et al. 2018, ACS Cent. Sci.
  4:268), fitted on the posterior means of the scored molecules. The ascent never decodes.
- ``"limo"``: the same head over the decoded molecule (after LIMO, Eckmann et al. 2022,
  ICML): z -> :meth:`~molvae.model.MolVAE.decode_relaxed` (straight-through argmax) ->
  :meth:`~molvae.model.MolVAE.encode_relaxed` (the frozen encoder as the sequence featurizer)
  -> head, fitted on the greedy decodes that produced each scored molecule. The gradient
  reaches z through the decoded sequence, and the forward pass is exactly greedy decoding,
  so the head scores the very molecule a proposal will decode to. (Heads on the flattened
  or convolved one-hot sequence predicted far worse in our measurements.)

Each round starts from the best molecules seen plus a little noise, takes ``steps`` Adam steps
on pred(z) - prior_weight * NLL(z) / Z (the model's sampling density), each followed by a
projection onto a ball of ``trust_radius`` around the start, and evaluates the end points with
their predicted scores. Every random draw comes from generators seeded by the run's seed.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import density
from .model import EOS
from .search import Batch, Search

__all__ = ["gradient_ascent", "LatentHead", "sequence_features", "init_weights"]

log = logging.getLogger(__name__)

PREDICTORS = ("mlp", "limo")


# ------------------------------------------------------------------------------------ heads
def init_weights(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every Linear's weights and biases as torch's default init does, U(-b, b) with
    b = 1/sqrt(fan_in), but from ``generator`` instead of the global RNG."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                for p in (m.weight, m.bias):
                    if p is not None:
                        u = torch.rand(p.shape, generator=generator, dtype=torch.float32)
                        p.copy_((2 * u - 1).to(p.dtype) * bound)
    return module


class LatentHead(nn.Module):
    """z (B, Z) -> predicted standardized score (B,): Z -> H -> H -> 1 with SiLU.

    With a ``generator`` the weights are drawn from it alone (built on the meta device, so
    torch's default init never touches the global RNG).
    """

    def __init__(self, latent_dim: int, hidden: int = 256,
                 generator: torch.Generator | None = None):
        super().__init__()
        dev = "meta" if generator is not None else None
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden, device=dev), nn.SiLU(),
                                 nn.Linear(hidden, hidden, device=dev), nn.SiLU(),
                                 nn.Linear(hidden, 1, device=dev))
        if generator is not None:
            init_weights(self.to_empty(device="cpu"), generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


def sequence_features(tokens: torch.Tensor) -> torch.Tensor:
    """Zero every position after the first [eos]: tokens (B, T, V) -> (B, T, V).

    The mask is the product of (1 - p[eos]) over the earlier steps, exact 0/1 for one-hot
    tokens, and differentiable for relaxed ones, so an earlier or later [eos] moves the
    prediction smoothly.
    """
    not_ended = 1 - tokens[..., EOS]  # (B, T)
    alive = torch.cumprod(F.pad(not_ended[:, :-1], (1, 0), value=1.0), dim=1)  # (B, T)
    return tokens * alive.unsqueeze(-1)


def _generator(search: Search, *keys: int) -> torch.Generator:
    """A generator of its own for each use, derived from the run's seed."""
    state = np.random.SeedSequence([search.seed % 2**63, *keys]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> 1))


def _fit(head: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *,
         steps: int, lr: float, weight_decay: float, batch_size: int) -> float:
    """Minibatch AdamW on the squared error; returns the last minibatch loss."""
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    head.train()
    loss = torch.zeros(())
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen)
            loss = F.mse_loss(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    head.eval()
    return float(loss.detach())


# ------------------------------------------------------------------------------- predictors
class _Predictor:
    """A head, what it reads, and the scaling of its targets (it predicts standardized
    scores; :meth:`to_score` maps back)."""

    head: nn.Module

    def __init__(self, search: Search):
        self.search = search
        self.mean, self.std = 0.0, 1.0

    def training_set(self) -> tuple[torch.Tensor, np.ndarray]:
        raise NotImplementedError

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z) -> (B,) standardized prediction, differentiable in z."""
        raise NotImplementedError

    def prepare(self, z0: torch.Tensor) -> None:
        """Called with the round's starting points before the ascent."""

    def observe(self, batch: Batch) -> None:
        """Learn what a batch of proposals decoded to (the sequence predictor keeps it)."""

    def fit(self, gen: torch.Generator, **kw: float) -> float:
        x, y = self.training_set()
        self.mean = float(y.mean())
        self.std = float(y.std()) if len(y) > 1 and y.std() > 1e-8 else 1.0
        target = torch.as_tensor((y - self.mean) / self.std, dtype=torch.float32)
        return _fit(self.head, x, target, gen, **kw)

    def to_score(self, pred: torch.Tensor) -> np.ndarray:
        return pred.detach().double().numpy() * self.std + self.mean


class _LatentPredictor(_Predictor):
    def __init__(self, search: Search, hidden: int, gen: torch.Generator):
        super().__init__(search)
        self.head = LatentHead(search.z_dim, hidden, gen)

    def training_set(self) -> tuple[torch.Tensor, np.ndarray]:
        x, y = self.search.observed()
        return x.float(), y

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)


class _SequencePredictor(_LatentPredictor):
    """LIMO: the head reads the decoded molecule, z -> relaxed tokens -> frozen encoder -> mu.

    It learns from the token sequences that produced each scored molecule, as the encoder
    reads them (decoded SELFIES are often not the canonical ones the posterior means come
    from, and the encoder puts the two readings far apart); molecules no proposal of this run
    made (start molecules) enter with their posterior means.
    """

    def __init__(self, search: Search, hidden: int, gen: torch.Generator, *, tau: float,
                 noise: bool, margin: int = 8):
        super().__init__(search, hidden, gen)
        self.net = search.model.net
        self.max_steps = search.model.config.max_len + 1
        self.rows: dict[str, torch.Tensor] = {}  # molecule -> its decoded tokens, read (Z,)
        self.tau, self.noise, self.margin, self.gen = tau, noise, margin, gen
        self.steps = self.max_steps

    def _greedy(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z) -> greedy ids (B, <=T), PAD after [eos]."""
        with torch.no_grad():
            return self.net.decoder.generate(z.to(self.search.model.device), self.max_steps, 0.0)

    def prepare(self, z0: torch.Tensor) -> None:
        # decode no further than the starts' molecules need, plus a margin to grow into
        self.steps = min(self.max_steps, self._greedy(z0).shape[1] + self.margin)

    def observe(self, batch: Batch) -> None:
        keep = [i for i, s in enumerate(batch.smiles) if s and s not in self.rows]
        if not keep:
            return
        ids = self._greedy(batch.z[keep])
        lengths = (ids != EOS).long().cumprod(1).sum(1).clamp_min(1)
        with torch.no_grad():
            mu, _ = self.net.encode(ids, lengths)
        for j, i in enumerate(keep):
            self.rows.setdefault(batch.smiles[i], mu[j].float().cpu())

    def training_set(self) -> tuple[torch.Tensor, np.ndarray]:
        s = self.search
        scores, z_mol = s.scores, s.z_mol
        names = [m for m, i in s.seen.items() if math.isfinite(scores[i])]
        x = [self.rows[m] if m in self.rows else z_mol[s.seen[m]] for m in names]
        return torch.stack(x).float(), np.array([scores[s.seen[m]] for m in names])

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        dev = self.search.model.device
        gen = self.gen if dev.type == "cpu" else None  # noise on an accelerator: its own RNG
        _, tokens = self.net.decode_relaxed(z.to(dev), self.steps, self.tau, gen,
                                            hard=True, noise=self.noise)  # (B, T, V)
        mu, _ = self.net.encode_relaxed(sequence_features(tokens))  # (B, Z)
        return self.head(mu.float().cpu())


# ---------------------------------------------------------------------------------- ascent
def _prior_nll(search: Search, z: torch.Tensor) -> torch.Tensor:
    """-log density of z under the model's sampling density: (B,), differentiable in z."""
    model = search.model
    t = {k: v.to(z.device) for k, v in model.prior_tensors.items()}
    return -density.log_prob(model.prior, t, z)


def _project(z: torch.Tensor, z0: torch.Tensor, radius: float) -> torch.Tensor:
    """The nearest point to each row of z within ``radius`` of its start row."""
    d = z - z0
    norm = d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return z0 + d * (radius / norm).clamp(max=1.0)


def _ascend(search: Search, predictor: _Predictor, z0: torch.Tensor, *, steps: int,
            lr: float, trust_radius: float, prior_weight: float
            ) -> tuple[torch.Tensor, np.ndarray]:
    """Projected Adam ascent from z0 (B, Z); the end points and their predicted scores."""
    predictor.prepare(z0)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            gain = predictor.predict(z)
            if prior_weight:
                gain = gain - prior_weight * _prior_nll(search, z) / search.z_dim
            (grad,) = torch.autograd.grad(-gain.sum(), z)  # no gradients for the weights
            z.grad = grad
            opt.step()
            with torch.no_grad():
                z.copy_(_project(z, z0, trust_radius))
    z = z.detach()
    with torch.no_grad():
        pred = predictor.predict(z)
    return z, predictor.to_score(pred)


def _starts(search: Search, batch: int, starts: int, sigma: float) -> torch.Tensor:
    """``batch`` points: the ``starts`` best molecules' latents in turn, each plus noise."""
    top, _ = search.top(starts)
    z0 = top[torch.arange(batch) % len(top)].float()
    return z0 + sigma * torch.randn(z0.shape, generator=search.gen)


# ---------------------------------------------------------------------------------- method
def _check(predictor: str, **positive: float) -> None:
    """The predictor is known and every named option is > 0 (counts are then >= 1)."""
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {', '.join(PREDICTORS)}, got {predictor!r}")
    for name, v in positive.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")


def gradient_ascent(search: Search, *, predictor: str = "mlp", batch: int = 100,
                    starts: int = 25, init: int | None = None, rounds: int | None = None,
                    steps: int | None = None, lr: float = 0.05, trust_radius: float = 2.0,
                    prior_weight: float = 0.1, sigma: float = 0.1, hidden: int | None = None,
                    fit_steps: int = 200, fit_lr: float = 1e-3, weight_decay: float = 1e-4,
                    fit_batch: int = 256, novelty: float = 0.25, max_scale: float = 4.0,
                    tau: float = 1.0, noise: bool = False) -> None:
    """Gradient ascent on z against a predictor refitted every round.

    Args:
        search: the shared search state.
        predictor: ``"mlp"`` (a head on z) or ``"limo"`` (a head on the decoded sequence,
            differentiated through the decoder).
        batch: points proposed per round.
        starts: how many of the best molecules seen the round's points start from.
        init: prior samples scored first when nothing is known yet (default ``batch``).
        rounds: stop after this many rounds (default: when the budget is spent).
        steps: Adam steps per round (default 10 for ``"mlp"``, 4 for ``"limo"``).
        lr: the ascent's Adam learning rate.
        trust_radius: how far (Euclidean) a point may move from its start.
        prior_weight: weight of the sampling density's NLL per latent dimension, which keeps
            points where the decoder has seen data.
        sigma: the noise added to each start, per dimension.
        hidden: the head's width.
        fit_steps, fit_lr, weight_decay, fit_batch: each round's AdamW refit (warm start).
        novelty: the fraction of a round's points that should decode to new molecules;
            sigma, lr and trust_radius are scaled up (by 1.5, to at most ``max_scale``) after
            a round below it and down after a round above twice it.
        tau, noise: the relaxed decode of ``"limo"``: softmax temperature of the backward
            pass, and Gumbel noise (off: the forward pass is greedy decoding).
    """
    _check(predictor, batch=batch, starts=starts, fit_batch=fit_batch,
           trust_radius=trust_radius, tau=tau)
    limo = predictor == "limo"
    steps = (4 if limo else 10) if steps is None else int(steps)
    hidden = 256 if hidden is None else int(hidden)
    gen = _generator(search, 0)
    model: _Predictor = (_SequencePredictor(search, hidden, gen, tau=tau, noise=noise) if limo
                         else _LatentPredictor(search, hidden, gen))
    fit = {"steps": fit_steps, "lr": fit_lr, "weight_decay": weight_decay,
           "batch_size": fit_batch}
    if not len(search.observed()[1]):
        model.observe(search.evaluate(search.sample_prior(init or batch)))
    r, scale = 0, 1.0
    while not search.done and (rounds is None or r < rounds):
        if len(search.observed()[1]) < 2:  # nothing to learn from yet
            model.observe(search.evaluate(search.sample_prior(init or batch)))
            continue
        loss = model.fit(_generator(search, 1, r), **fit)
        z0 = _starts(search, batch, starts, sigma * scale)
        z, predicted = _ascend(search, model, z0, steps=steps, lr=lr * scale,
                               trust_radius=trust_radius * scale, prior_weight=prior_weight)
        out = search.evaluate(z, predicted=predicted)
        model.observe(out)
        # the decoder maps whole regions onto one molecule: widen the moves while too few
        # points leave the molecules already seen, narrow them again once most do
        frac = out.novel / batch
        if frac < novelty:
            scale = min(scale * 1.5, max_scale)
        elif frac > 2 * novelty:
            scale = max(scale / 1.5, 1.0 / max_scale)
        log.debug("round %d: fit loss %.3g, %d new, scale %.3g, best %.4g", r, loss, out.new,
                  scale, search.oracle.best())
        r += 1
