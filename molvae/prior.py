"""Sampling densities fitted to the aggregate posterior of a model's training molecules.

A VAE trained with a small KL weight leaves regions of N(0, I) that no training molecule maps
to; latent points drawn there decode to molecules unlike the data. Fitting a density to where
the training molecules actually sit (an "ex-post" density, Ghosh et al. 2020) and drawing from
it instead is cheap, and which density a model samples from is stored in its checkpoint:

    model = molvae.prior.fit(model, train_smiles, kind="flow")   # a copy with the new density
    molvae.save(model, "with_flow.safetensors")

The same density serves optimization: :func:`log_prob` says how typical a latent point is.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import density
from .checkpoint import Model
from .density import fit_gmm, gmm_log_prob
from .generate import posterior, prepare_inputs

__all__ = ["fit", "fit_points", "log_prob", "with_density", "scaled", "posterior_samples",
           "fit_gmm", "gmm_log_prob"]

log = logging.getLogger(__name__)

FIT_KINDS = ("gmm", "flow")
DEFAULT_MOLECULES = 100_000
CHUNK = 10_000  # molecules per encoder step (the progress bar's step)


def with_density(model: Model, info: dict[str, Any],
                 tensors: dict[str, torch.Tensor] | None = None) -> Model:
    """A shallow copy of ``model`` (the same network) that samples from another density."""
    density.check_kind(info)
    density.check_scale(info)
    m = copy.copy(model)
    m.prior = dict(info)
    m.prior_tensors = {k: v.to(model.device) for k, v in (tensors or {}).items()}
    m.meta = dict(model.meta)
    return m


def scaled(model: Model, scale: float) -> Model:
    """A shallow copy of ``model`` whose draws from its density are shrunk (``scale`` < 1) or
    widened (> 1) by ``scale``: the sampling "temperature" of the latent density. Shrinking
    trades novelty for samples the decoder gets right (README: Sampling densities); the scale
    is saved with the checkpoint and only sampling uses it (:func:`log_prob` is unchanged)."""
    info = {**model.prior, "scale": scale}
    density.check_scale(info)
    if float(scale) == 1.0:
        del info["scale"]
    return with_density(model, info, model.prior_tensors)


def posterior_samples(model: Model, smiles: Sequence[Any], per_molecule: int = 1,
                      seed: int = 0, progress: bool = False
                      ) -> tuple[torch.Tensor, list[tuple[int, Any, str, str]]]:
    """z ~ q(z|x), ``per_molecule`` draws for each usable molecule. Returns (points
    (M * per_molecule, Z), the skipped molecules as (index, input, status, reason))."""
    smiles = list(smiles)
    prep = prepare_inputs(model, smiles, progress=progress)  # RDKit work: a bar over it
    rows = [r for r in prep.ids if r is not None]
    if not rows:
        raise ValueError(f"none of the {len(smiles)} molecules can be read by this model "
                         f"(first problem: {prep.problems[0][3] if prep.problems else '?'})")
    g = torch.Generator().manual_seed(int(seed))
    out = []
    bar = tqdm(total=len(rows), desc="posteriors", unit="mol", disable=not progress)
    for s in range(0, len(rows), CHUNK):
        mu, logvar = posterior(model, rows[s: s + CHUNK])
        std = (0.5 * logvar).exp()
        for _ in range(per_molecule):
            out.append(mu + torch.randn(mu.shape, generator=g) * std)
        bar.update(len(mu))
    bar.close()
    return torch.cat(out), prep.problems


def fit(model: Model, smiles: Sequence[Any], kind: str = "flow", *,
        molecules: int | None = DEFAULT_MOLECULES, per_molecule: int = 1, seed: int = 0,
        components: int = 1024, layers: int = 8, hidden: int = 256, steps: int = 4000,
        progress: bool = True) -> Model:
    """Fit a sampling density to the posteriors of ``smiles`` and return a copy of ``model``
    that draws from it (the network is shared, not copied; save it with :func:`molvae.save`).

    ``kind``: ``"flow"`` (affine coupling flow, ``layers`` x ``hidden``, ``steps`` Adam steps)
    or ``"gmm"`` (diagonal Gaussian mixture with ``components`` components, EM). ``molecules``
    caps how many of ``smiles`` are used (a seeded random subset; None: all).
    """
    if kind not in FIT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FIT_KINDS)}, got {kind!r}")
    smiles = list(smiles)
    if not smiles:
        raise ValueError("prior.fit needs molecules to fit to; got none")
    if molecules is not None and len(smiles) > molecules:
        pick = np.sort(np.random.default_rng(seed).choice(len(smiles), molecules,
                                                          replace=False))
        smiles = [smiles[i] for i in pick]
    t0 = time.perf_counter()
    z, skipped = posterior_samples(model, smiles, per_molecule, seed, progress)
    if skipped:
        shown = "; ".join(f"{text!r}: {status}: {reason}" for _, text, status, reason
                          in skipped[:3])
        log.warning("prior.fit: %d of %d molecules skipped, the model cannot read them (%s%s)",
                    len(skipped), len(smiles), shown, "; ..." if len(skipped) > 3 else "")
    fitted_on = f"{len(z):,} posterior samples of {len(z) // per_molecule:,} molecules"
    out = fit_points(model, z, kind, seed=seed, components=components, layers=layers,
                     hidden=hidden, steps=steps, progress=progress, fitted_on=fitted_on)
    log.info("prior.fit: %s on %s in %.0f s", kind, fitted_on, time.perf_counter() - t0)
    return out


def fit_points(model: Model, z: torch.Tensor, kind: str = "flow", *, seed: int = 0,
               components: int = 1024, layers: int = 8, hidden: int = 256, steps: int = 4000,
               progress: bool = False, fitted_on: str | None = None) -> Model:
    """:func:`fit` on latent points z (N, Z) already drawn (e.g. by :func:`posterior_samples`)."""
    if kind not in FIT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FIT_KINDS)}, got {kind!r}")
    z = torch.as_tensor(z, dtype=torch.float32).cpu()
    if z.ndim != 2 or z.shape[1] != model.config.latent_dim or len(z) < 2:
        raise ValueError(f"z must have shape (N >= 2, {model.config.latent_dim}), got "
                         f"{tuple(z.shape)}")
    if kind == "gmm":
        tensors = fit_gmm(z, n_components=components, seed=seed)
        info: dict[str, Any] = {"kind": "gmm", "components": int(tensors["weights"].numel())}
        stats = {"nll": float(-torch.logsumexp(gmm_log_prob(z, **tensors), 1).mean())}
    else:
        bar = tqdm(total=steps, desc="flow", unit="step", disable=not progress)

        def tick(step: int, val_nll: float) -> None:
            bar.n = step
            bar.set_postfix(val_nll=f"{val_nll:.2f}")
            bar.refresh()

        flow, stats = density.fit_flow(z, layers=layers, hidden=hidden, steps=steps,
                                       seed=seed, progress=tick)
        bar.close()
        tensors = flow.tensors()
        info = {"kind": "flow", "layers": layers, "hidden": hidden}
    info["fitted_on"] = fitted_on or f"{len(z):,} latent points"
    info["fit"] = {k: round(float(v), 4) for k, v in stats.items()}
    info["seed"] = int(seed)
    return with_density(model, info, tensors)


def log_prob(model: Model, z: torch.Tensor | np.ndarray) -> torch.Tensor:
    """log density of latent points z (N, Z) under the model's sampling density: (N,).
    Differentiable in z when z is a tensor that requires grad."""
    z = torch.as_tensor(z, dtype=torch.float32, device=model.device)
    if z.ndim != 2 or z.shape[1] != model.config.latent_dim:
        raise ValueError(f"z must have shape (N, {model.config.latent_dim}), got "
                         f"{tuple(z.shape)}")
    return density.log_prob(model.prior, model.prior_tensors, z)
