"""Strings in, strings out: encode, decode, reconstruct, interpolate, neighbours, elbo (and
sampling, from :mod:`molvae.sampling`, re-exported here).

Outputs are canonical RDKit SMILES; ``None`` marks an invalid or empty decode; lists keep the
input order and length. The decoding engine (seeded blocks, streaming, post-processing) is
:mod:`molvae.decoding`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from . import chem, parallel
from .checkpoint import Model
from .data import pad_ids
from .decoding import (  # noqa: F401  (re-exported: the public names and what tests use)
    BLOCK,
    _check_seed,
    _check_settings,
    _decode_one_chunk,
    _ids_to_smiles,
    _stream,
    fresh_seed,
    sample_latent,
)
from .sampling import (  # noqa: F401  (re-exported)
    DRAWS_PER_MOLECULE,
    DRAWS_SLACK,
    LowAcceptanceError,
    SampleIterator,
    SampleStats,
    iter_sample,
    iter_sample_ids,
    sample,
)
from .vocab import Vocab

__all__ = ["MoleculeError", "LowAcceptanceError", "SampleStats", "SampleIterator", "sample",
           "iter_sample", "iter_sample_ids", "encode", "decode",
           "reconstruct", "reconstruction_rate", "active_units",
           "interpolate", "neighbours", "elbo", "prepare_inputs", "posterior", "sample_latent",
           "encode_prepared", "elbo_prepared",
           "fresh_seed"]


class MoleculeError(ValueError):
    """Some inputs could not be encoded; ``.problems`` lists (index, input, status, reason)."""

    def __init__(self, problems: list[tuple[int, Any, str, str]]):
        self.problems = problems
        lines = [f"  [{i}] {text!r}: {status}: {reason}" for i, text, status, reason in problems]
        super().__init__(f"{len(problems)} input(s) could not be encoded:\n" + "\n".join(lines))


def decode(model: Model, z: torch.Tensor | np.ndarray, temperature: float = 0.0,
           seed: int | None = None, *, batch_size: int = 1000, workers: int | None = 0,
           with_consistency: bool = False, grammar: bool = False
           ) -> list[str | None] | tuple[list[str | None], list[bool]]:
    """Decode latent points (N, Z) to SMILES; temperature 0 is greedy.

    With ``with_consistency`` the result is ``(smiles, flags)``: ``flags[i]`` says whether
    row i's decoded SELFIES string is grammar-consistent, the canonical SELFIES of its own
    molecule (see :func:`iter_sample`; False for an invalid decode). One point gives one
    answer either way: nothing is re-drawn. ``grammar`` decodes under the SELFIES grammar
    mask (:mod:`molvae.grammar`): no decode is then a string SELFIES had to repair.

    With temperature > 0, row i's token noise comes from block i // 64 of ``seed`` (fresh
    entropy when None; a seed must be an integer >= 0), so row i's molecule depends only on
    (z[i], seed, i, temperature): not on ``batch_size`` or the other rows. Greedy decoding
    uses no randomness.

    Up to ``batch_size`` points (one chunk: what an optimizer asks for) are decoded by plain
    synchronous code that leaves torch's thread settings alone. More points go through the
    streaming decoder, which decodes chunks on parallel threads (setting torch's intra-op
    threads to one while it runs) and post-processes on ``workers`` processes; both give the
    same molecules.
    """
    seed = _check_seed(seed)
    z = torch.as_tensor(np.asarray(z) if not isinstance(z, torch.Tensor) else z,
                        dtype=torch.float32)
    if z.ndim == 1:
        z = z.unsqueeze(0)
    if z.ndim != 2 or z.shape[1] != model.config.latent_dim:
        raise ValueError(f"z must have shape (N, {model.config.latent_dim}), got "
                         f"{tuple(z.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not temperature >= 0:  # also catches NaN
        raise ValueError(f"temperature must be a number >= 0, got {temperature}")
    settings = _check_settings(model) if with_consistency else None
    if len(z) == 0:
        return ([], []) if with_consistency else []
    if len(z) <= batch_size:
        # a thread pool and a process-wide thread-count switch cost more than they save on a
        # single chunk (scripts/benchmark_decode.py), and would touch the caller's settings
        smiles, flags = _decode_one_chunk(model, z, temperature, seed, settings, grammar)
        return (smiles, flags) if with_consistency else smiles  # type: ignore[return-value]
    parts = list(_stream(model, len(z), z, temperature, seed, batch_size, workers,
                         settings=settings, grammar=grammar))
    if not with_consistency:
        return [smi for part in parts for smi in part]
    return ([smi for smiles, _ in parts for smi in smiles],
            [ok for _, flags in parts for ok in flags])


# --------------------------------------------------------------------------------- encoding
@dataclass
class PreparedInputs:
    ids: list[list[int] | None]
    problems: list[tuple[int, Any, str, str]]
    smiles: list[str | None]  # the standardized canonical SMILES; None where ids is None
    notes: list[str]  # what standardization changed, per item ("" for nothing)


def _prepare_chunk(payload: tuple[list[str], dict[str, int], dict[str, Any], int],
                   items: Sequence[Any]) -> list[tuple[Any, ...]]:
    """prepare_inputs' work for a chunk of items (in a worker process for large inputs): per
    item (id row or None, canonical SMILES, note, None or (shown input, status, reason))."""
    symbols, constraints, settings, max_len = payload
    vocab = Vocab(tuple(symbols), constraints)
    out = []
    with chem.constraints(constraints):
        for item in items:
            p = chem.prepare(item, **settings)
            row, problem = None, None
            if not p.ok:
                problem = (p.status, p.reason)
            elif unknown := vocab.unknown(p.selfies):
                charged = any(("+" in s or "-" in s) for s in unknown)
                hint = " (charged atoms left after neutralization)" if (
                    charged and settings["neutralize"]) else ""
                problem = (chem.UNKNOWN_TOKEN, "symbols not in the model vocabulary: "
                           + " ".join(dict.fromkeys(unknown)) + hint)
            else:
                row = vocab.encode(p.selfies)
                if len(row) > max_len:
                    problem = (chem.TOO_LONG, f"{len(row)} SELFIES symbols, the model allows "
                               f"{max_len}")
                    row = None
            shown = None
            if problem is not None:
                shown = chem.canonical_smiles(item) if chem.is_mol(item) else item
            out.append((row, p.smiles, p.note, None if problem is None else (shown, *problem)))
    return out


def prepare_inputs(model: Model, items: Sequence[Any], *, jobs: int | None = None,
                   progress: bool = False) -> PreparedInputs:
    """Standardize with the model's policy (:func:`molvae.domain.policy`, resolved against its
    vocabulary) and map to ids; problems listed per item, notes kept per item. Large inputs
    are standardized on ``jobs`` worker processes (:func:`molvae.parallel.pmap`: every core
    by default, in this process below its threshold), with a progress bar if asked."""
    if isinstance(items, (str, bytes)) or chem.is_mol(items):
        raise TypeError("pass a list of molecules, e.g. encode(model, ['CCO'])")
    cfg = model.config
    rules = chem.standardization_policy(cfg.largest_fragment, cfg.keep_stereo,
                                        (model.domain or {}).get("policy"))
    settings = chem.prepare_settings(rules, model.vocab.symbols)
    payload = (list(model.vocab.symbols), dict(model.vocab.constraints), settings, cfg.max_len)
    results = parallel.pmap(partial(_prepare_chunk, payload), list(items), jobs=jobs,
                            progress=progress, desc="standardizing")
    ids = [row for row, _, _, _ in results]
    problems = [(i, *problem) for i, (_, _, _, problem) in enumerate(results)
                if problem is not None]
    smiles = [None if row is None else smi for row, smi, _, _ in results]
    return PreparedInputs(ids, problems, smiles, [note for _, _, note, _ in results])


def _check_errors(errors: str) -> None:
    if errors not in ("raise", "nan"):
        raise ValueError(f"errors must be 'raise' or 'nan', got {errors!r}")


def posterior(model: Model, rows: list[list[int]], batch_size: int = 1000
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (mu, logvar), each (N, Z) on the CPU, of prepared id rows
    (:func:`prepare_inputs`)."""
    mus, logvars = [], []
    model.net.eval()
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            x, lengths = pad_ids(rows[s: s + batch_size])
            mu, logvar = model.net.encode(x.to(model.device), lengths.to(model.device))
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
    z = model.config.latent_dim
    if not mus:
        return torch.empty(0, z), torch.empty(0, z)
    return torch.cat(mus), torch.cat(logvars)


def encode(model: Model, items: Sequence[Any], errors: str = "raise", *,
           sample_posterior: bool = False, seed: int | None = None, batch_size: int = 1000
           ) -> torch.Tensor:
    """Encode SMILES or RDKit Mols to latent points (N, Z): posterior means by default.

    With ``errors="raise"`` a :class:`MoleculeError` names every bad input by index, text and
    reason; with ``errors="nan"`` their rows are NaN and alignment is kept.
    """
    _check_errors(errors)
    prep = prepare_inputs(model, items)
    if prep.problems and errors == "raise":
        raise MoleculeError(prep.problems)
    return encode_prepared(model, prep, sample_posterior=sample_posterior, seed=seed,
                           batch_size=batch_size)


def encode_prepared(model: Model, prep: PreparedInputs, *, sample_posterior: bool = False,
                    seed: int | None = None, batch_size: int = 1000) -> torch.Tensor:
    """:func:`encode` of inputs already standardized by :func:`prepare_inputs` (NaN rows for
    the ones it could not prepare): the same numbers without standardizing twice."""
    good = [i for i, r in enumerate(prep.ids) if r is not None]
    mu, logvar = posterior(model, [prep.ids[i] for i in good], batch_size)  # type: ignore[misc]
    if sample_posterior and len(good):
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        mu = mu + torch.randn(mu.shape, generator=gen) * (0.5 * logvar).exp()
    out = torch.full((len(prep.ids), model.config.latent_dim), float("nan"))
    if good:
        out[torch.as_tensor(good)] = mu
    return out


def _reconstruct(model: Model, prep: PreparedInputs, temperature: float = 0.0,
                 seed: int | None = None) -> list[str | None]:
    """Decode the posterior means of prepared inputs; None where an input could not be used."""
    good = [i for i, r in enumerate(prep.ids) if r is not None]
    out: list[str | None] = [None] * len(prep.ids)
    if good:
        mu, _ = posterior(model, [prep.ids[i] for i in good], 1000)  # type: ignore[misc]
        for i, smi in zip(good, decode(model, mu, temperature=temperature, seed=seed)):
            out[i] = smi
    return out


def reconstruct(model: Model, smiles: Sequence[Any], temperature: float = 0.0,
                seed: int | None = None) -> list[str | None]:
    """Encode to the posterior mean and decode (greedy by default); None for bad inputs."""
    return _reconstruct(model, prepare_inputs(model, smiles), temperature, seed)


def reconstruction_rate(model: Model, smiles: Sequence[Any]) -> float:
    """Fraction of molecules that come back exactly: greedy decode from the posterior mean,
    compared as canonical SMILES after the model's own standardization. A molecule the model
    cannot encode (unknown token, too long, invalid) counts as a miss.

    Raises:
        ValueError: no molecules.
    """
    if len(smiles) == 0:
        raise ValueError("reconstruction_rate() needs at least one molecule")
    prep = prepare_inputs(model, smiles)  # once: its canonical SMILES are the targets
    out = _reconstruct(model, prep)
    return sum(s is not None and s == t for s, t in zip(out, prep.smiles)) / len(smiles)


def active_units(model: Model, smiles: Sequence[Any], threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across molecules: Var_x(E[z_d | x]) above
    ``threshold`` (Burda et al. 2016). Molecules the model cannot encode are left out.

    Raises:
        ValueError: fewer than two molecules can be encoded.
    """
    z = encode(model, smiles, errors="nan")
    z = z[~torch.isnan(z).any(1)]
    if len(z) < 2:
        raise ValueError("active_units() needs at least two molecules the model can encode")
    return int((z.var(0) > threshold).sum())


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    na, nb = a.norm(), b.norm()
    cos = torch.dot(a / na, b / nb).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if float(omega) < 1e-6:
        return a + (b - a) * t[:, None]
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / so


def interpolate(model: Model, start: Any, end: Any, steps: int = 10, method: str = "slerp",
                temperature: float = 0.0, seed: int | None = None, *, ends: str = "inputs",
                with_consistency: bool = False
                ) -> list[str | None] | tuple[list[str | None], list[bool | None]]:
    """``steps`` molecules along the latent path from start's posterior mean to end's.

    With ``ends="inputs"`` (the default) the first and last items are the inputs themselves
    (standardized canonical SMILES) and the ``steps - 2`` between are decoded; with
    ``ends="decoded"`` every item is decoded, so the ends are the model's reconstructions of
    the inputs (which differ from them where the model does not reproduce an input). With
    ``with_consistency`` the result is ``(smiles, flags)``, each decode's grammar-consistency
    flag (as :func:`decode` gives it; None for an input end, which is not a decode).
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    if ends not in ("inputs", "decoded"):
        raise ValueError(f"ends must be 'inputs' or 'decoded', got {ends!r}")
    prep = prepare_inputs(model, [start, end])
    if prep.problems:
        raise MoleculeError(prep.problems)
    mu, _ = posterior(model, prep.ids)  # type: ignore[arg-type]
    t = torch.linspace(0, 1, steps)
    path = (mu[0] + (mu[1] - mu[0]) * t[:, None]) if method == "linear" else _slerp(mu[0], mu[1], t)
    out, flags = decode(model, path, temperature=temperature, seed=seed, with_consistency=True)
    marks: list[bool | None] = list(flags)
    if ends == "inputs":
        out[0], out[-1] = prep.smiles[0], prep.smiles[1]
        marks[0] = marks[-1] = None
    return (out, marks) if with_consistency else out


def neighbours(model: Model, smiles: Any, n: int = 10, scale: float = 0.5,
               seed: int | None = None, temperature: float = 0.0, *,
               with_consistency: bool = False
               ) -> list[tuple[str, float]] | list[tuple[str, float, bool]]:
    """Molecules decoded near a given one, with their Tanimoto similarity to it.

    Points are drawn around the posterior mean with standard deviation ``scale``; invalid and
    duplicate decodes and the molecule itself are dropped; best similarity first. With
    ``with_consistency`` each item is ``(smiles, similarity, consistent)``: whether a
    grammar-consistent decode gave the molecule (see :func:`decode`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    z = encode(model, [smiles], errors="raise")[0]
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    ref = prepare_inputs(model, [smiles]).smiles[0]  # the model's own standardization
    found: dict[str, float] = {}
    consistent: dict[str, bool] = {}
    for _ in range(20):  # a bounded number of rounds; returns fewer if the region is sparse
        pts = z + scale * torch.randn((4 * n, z.shape[0]), generator=gen)
        decoded, flags = decode(model, pts, temperature=temperature,
                                seed=None if seed is None else seed + len(found),
                                with_consistency=True)
        for s, ok in zip(decoded, flags):
            if s:
                consistent[s] = consistent.get(s, False) or ok
        cands = list(dict.fromkeys(s for s in decoded if s and s != ref and s not in found))
        for s, sim in zip(cands, chem.tanimoto_to(ref, cands)):
            found[s] = sim
        if len(found) >= n:
            break
    best = sorted(found.items(), key=lambda kv: -kv[1])[:n]
    if with_consistency:
        return [(s, sim, consistent[s]) for s, sim in best]
    return best


def elbo(model: Model, smiles: Sequence[Any], n_samples: int = 8, seed: int | None = 0,
         batch_size: int = 500) -> dict[str, np.ndarray]:
    """Per-molecule negative ELBO in nats, with its reconstruction and KL parts.

    The reconstruction term is averaged over ``n_samples`` posterior samples drawn with
    ``seed``. High values flag molecules unlike the training data. Invalid inputs get NaN.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    return elbo_prepared(model, prepare_inputs(model, smiles), n_samples, seed, batch_size)


def elbo_prepared(model: Model, prep: PreparedInputs, n_samples: int = 8,
                  seed: int | None = 0, batch_size: int = 500) -> dict[str, np.ndarray]:
    """:func:`elbo` of inputs already standardized by :func:`prepare_inputs`."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    n = len(prep.ids)
    neg, rec, kl = (np.full(n, np.nan) for _ in range(3))
    good = [i for i, r in enumerate(prep.ids) if r is not None]
    gen = torch.Generator()
    base_seed = 0 if seed is None else int(seed)
    net = model.net.eval()
    with torch.no_grad():
        for s in range(0, len(good), batch_size):
            part = good[s: s + batch_size]
            x, lengths = pad_ids([prep.ids[i] for i in part])  # type: ignore[misc]
            x, lengths = x.to(model.device), lengths.to(model.device)
            mu, logvar = net.encode(x, lengths)
            kld = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
            r = torch.zeros(len(part), device=model.device)
            # noise seeded per molecule (seed + its tokens), so a score does not depend on
            # which other molecules share the call
            eps = torch.stack([
                torch.randn((n_samples, mu.shape[1]), generator=gen.manual_seed(
                    (base_seed * 1_000_003 + zlib.crc32(bytes(prep.ids[i]))) % 2**63))
                for i in part]).to(model.device)  # (B, S, Z)
            for k in range(n_samples):
                z = mu + eps[:, k] * (0.5 * logvar).exp()
                logits = net.decoder.teacher(z, x)
                ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x,
                                                       ignore_index=0, reduction="none")
                r += ce.sum(1)
            r /= n_samples
            idx = np.asarray(part)
            rec[idx] = r.cpu().numpy()
            kl[idx] = kld.cpu().numpy()
            neg[idx] = rec[idx] + kl[idx]
    return {"neg_elbo": neg, "recon": rec, "kl": kl}


