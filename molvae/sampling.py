"""Sampling molecules from a model: raw, or grammar-consistent (the default), with the
acceptance statistics. The decoding itself is :mod:`molvae.decoding`'s.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import Model
from .decoding import BLOCK, _base_seed, _check_seed, _check_settings, _stream

__all__ = ["LowAcceptanceError", "SampleStats", "SampleIterator", "sample", "iter_sample",
           "iter_sample_ids", "sampling_settings", "DRAWS_PER_MOLECULE", "DRAWS_SLACK"]


# ---------------------------------------------------------------------------------- sampling
def sampling_settings(model: Model, temperature: float | None, grammar: bool | None,
                      top_p: float | None = None) -> tuple[float, bool, float]:
    """The decoder temperature, whether to sample under the grammar mask, and the nucleus
    (top-p) share: as given, or where None the model's own settings (``Model.sampling``:
    ``"temperature"``, default 1.0, ``"grammar"``, default off, ``"top_p"``, default 1.0 (the
    whole distribution), for a model that does not say)."""
    if temperature is None:
        temperature = model.sampling.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            temperature >= 0):  # also catches NaN
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if grammar is None:
        grammar = bool(model.sampling.get("grammar", False))
    if not isinstance(grammar, bool):
        raise ValueError(f"grammar must be True, False or None, got {grammar!r}")
    if top_p is None:
        top_p = model.sampling.get("top_p", 1.0)
    if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")
    return float(temperature), grammar, float(top_p)


DRAWS_PER_MOLECULE, DRAWS_SLACK = 20, 1000  # the default max_draws: 20 * n + 1000


class LowAcceptanceError(ValueError):
    """Grammar-consistent sampling gave up: too few consistent molecules in ``max_draws``
    draws. ``.stats`` says how many were found in how many draws."""

    def __init__(self, n: int, stats: SampleStats):
        self.stats = stats
        super().__init__(
            f"only {stats.accepted} of the {n} grammar-consistent molecules asked for in the "
            f"first {stats.drawn} draws (acceptance {stats.acceptance:.4f}): the model rarely "
            "samples the canonical SELFIES of the molecule it decodes to; sample raw "
            "molecules (consistent=False) or allow more draws (max_draws)")


@dataclass
class SampleStats:
    """How a sampler came by its molecules, counted as it goes (final once it is exhausted).

    ``drawn`` is the number of latent points of the seed's sequence looked at, up to and
    including the last molecule kept, and ``accepted`` how many of them were kept: with
    ``consistent`` the grammar-consistent ones, so ``acceptance`` is the consistency rate of
    raw samples; raw sampling keeps every draw (acceptance 1.0) and checks nothing.
    """

    consistent: bool
    drawn: int = 0
    accepted: int = 0
    temperature: float | None = None  # the decoder temperature used (set when sampling starts)
    grammar: bool | None = None  # whether under the grammar mask (set when sampling starts)
    top_p: float | None = None  # the nucleus share sampled from (set when sampling starts)

    @property
    def acceptance(self) -> float:
        """accepted / drawn; NaN before the first draw."""
        return self.accepted / self.drawn if self.drawn else float("nan")


class SampleIterator(Iterator[list]):
    """What :func:`iter_sample` returns: its batches of SMILES in order, and ``stats`` (a
    :class:`SampleStats`). ``close()`` stops it early and releases its threads and workers."""

    def __init__(self, batches: Iterator[list], stats: SampleStats):
        self._batches = batches
        self.stats = stats

    def __iter__(self) -> SampleIterator:
        return self

    def __next__(self) -> list:
        return next(self._batches)

    def close(self) -> None:
        self._batches.close()  # type: ignore[attr-defined]


def iter_sample(model: Model, n: int, *, temperature: float | None = None,
                seed: int | None = None,
                batch_size: int = 1000, workers: int | None = None, consistent: bool = True,
                max_draws: int | None = None, grammar: bool | None = None,
                top_p: float | None = None) -> SampleIterator:
    """Batches of ``batch_size`` sampled SMILES in order (the last may be shorter), as an
    iterator; memory stays flat. The returned iterator's ``stats`` (:class:`SampleStats`) counts the
    draws and the acceptance rate.

    With ``consistent`` (the default) only grammar-consistent molecules are kept: those whose
    sampled SELFIES string is exactly the canonical SELFIES that the model's own tokenizer
    makes from the decoded molecule (:func:`molvae.chem.consistent_many`; the others are
    molecules SELFIES repaired into something the model did not spell). Latent points are
    drawn until n are found: the result is the first n consistent molecules of the seed's raw
    sequence, in order, so it keeps every seeding property below. If fewer than n are found
    in the first ``max_draws`` draws (default ``20 * n + 1000``: an acceptance rate below about
    5%), a :class:`LowAcceptanceError` (a ValueError) is raised. With ``consistent=False``
    every raw sample is kept, invalid decodes as None.

    ``grammar`` decodes under the SELFIES grammar mask (:mod:`molvae.grammar`: the decoder's
    distribution restricted to tokens the SELFIES decoder reads as written, so nothing is
    repaired); a decode the mask *forced* (at some step the allowed tokens held less than
    ``molvae.grammar.MIN_MASS`` of the decoder's probability) then does not count as
    consistent. ``temperature`` is the decoder's sampling temperature, and ``top_p`` < 1
    samples each step from its nucleus only: the fewest most likely tokens holding that share
    of the probability (:func:`molvae.model.nucleus`). Where any is None (the default) the
    model's own setting is used (``Model.sampling``; a model that does not say samples plainly
    at temperature 1.0 from the whole distribution).

    Raw molecule i depends only on (``seed``, i, ``temperature``, ``grammar``, ``top_p``, the
    model):
    the first k molecules are the same for every n >= k, and do not depend on ``batch_size``,
    the number of threads or decoding streams, or ``workers``. (Each block of 64 molecules draws its
    latent points and token noise from its own generator, derived from the seed and the
    block's index. Decoding batches of a different size can round a logit differently by
    ~1e-5, so a sampled token could in principle flip where two candidates tie that closely;
    none did in 2,000 samples of the bundled model at batch sizes 1, 7 and 37 against 1000.)
    ``seed=None`` draws fresh entropy; a seed must be an integer >= 0.

    While the iterator is open, torch's own intra-op threads are set to one (the decoding
    threads take the cores instead); closing or finishing it restores them.
    """
    stats = SampleStats(consistent)
    return SampleIterator(_sample_stream(model, n, temperature, seed, batch_size, workers, True,
                                         consistent, max_draws, stats, grammar, top_p), stats)


def iter_sample_ids(model: Model, n: int, *, temperature: float | None = None,
                    seed: int | None = None, batch_size: int = 1000,
                    grammar: bool | None = None, top_p: float | None = None
                    ) -> Iterator[np.ndarray]:
    """The token ids that raw :func:`iter_sample` (``consistent=False``) would turn into
    SMILES, batch by batch (PAD after [eos]); the pure decoding work, without SELFIES or
    RDKit."""
    yield from _sample_stream(model, n, temperature, seed, batch_size, None, False,
                              grammar=grammar, top_p=top_p)


def _sample_stream(model: Model, n: int, temperature: float | None, seed: int | None,
                   batch_size: int, workers: int | None, post_process: bool,
                   consistent: bool = False, max_draws: int | None = None,
                   stats: SampleStats | None = None, grammar: bool | None = None,
                   top_p: float | None = None) -> Iterator[Any]:
    """iter_sample and iter_sample_ids: latent points drawn per block, then _stream."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_draws is not None and (isinstance(max_draws, bool) or not isinstance(
            max_draws, numbers.Integral) or max_draws < 1):
        raise ValueError(f"max_draws must be an integer >= 1, got {max_draws!r}")
    seed = _check_seed(seed)
    temperature, grammar, top_p = sampling_settings(model, temperature, grammar, top_p)
    stats = SampleStats(consistent) if stats is None else stats
    stats.temperature, stats.grammar, stats.top_p = temperature, grammar, top_p
    if consistent and post_process:
        limit = DRAWS_PER_MOLECULE * n + DRAWS_SLACK if max_draws is None else int(max_draws)
        yield from _consistent_stream(model, n, temperature, seed, batch_size, workers, limit,
                                      stats, grammar, top_p)
        return
    for part in _stream(model, n, None, temperature, seed, batch_size, workers, post_process,
                        grammar=grammar, top_p=top_p):
        stats.drawn += len(part)
        stats.accepted += len(part)
        yield part


def _consistent_stream(model: Model, n: int, temperature: float, seed: int | None,
                       batch_size: int, workers: int | None, limit: int, stats: SampleStats,
                       grammar: bool, top_p: float) -> Iterator[list[str]]:
    """The first n grammar-consistent molecules of the seed's raw sequence, in batches.

    The raw sequence is decoded in rounds (one _stream each, over the next indices), and a
    round stops as soon as the n-th is found. The decoding threads work ahead of it, so a
    round is sized to what is missing at the acceptance seen so far (a first guess of 1/2,
    then 10% spare): everything a round decodes is usually needed, and a second round rarely
    needs a third. Which molecules come out does not depend on the rounds: raw molecule i is
    the same in any round and any chunk.
    """
    settings = _check_settings(model)
    base = _base_seed(seed)  # one seed for every round, also when fresh
    found: list[str] = []
    while stats.accepted < n:
        if stats.drawn >= limit:
            raise LowAcceptanceError(n, stats)
        # a first guess, then what was seen (not below the rate the default limit allows)
        rate = max(stats.acceptance, 1 / DRAWS_PER_MOLECULE) if stats.drawn else 0.5
        want = math.ceil((n - stats.accepted) / rate * 1.1)
        size = min(limit - stats.drawn, max(BLOCK, -(-want // BLOCK) * BLOCK))
        chunks = _stream(model, size, None, temperature, base, batch_size, workers, True,
                         settings, offset=stats.drawn, grammar=grammar, top_p=top_p)
        try:
            for smiles, flags in chunks:
                for smi, ok in zip(smiles, flags):
                    stats.drawn += 1
                    if ok:
                        found.append(smi)
                        stats.accepted += 1
                        if stats.accepted == n:
                            break
                while len(found) >= batch_size:
                    yield found[:batch_size]
                    del found[:batch_size]
                if stats.accepted == n:
                    break
        finally:
            chunks.close()
    if found:
        yield found


def sample(model: Model, n: int, temperature: float | None = None, seed: int | None = None, *,
           greedy: bool = False, batch_size: int = 1000, workers: int | None = None,
           consistent: bool = True, max_draws: int | None = None, return_stats: bool = False,
           grammar: bool | None = None, top_p: float | None = None
           ) -> list[str | None] | tuple[list[str | None], SampleStats]:
    """Sample n molecules; ``greedy=True`` decodes each z by argmax (temperature 0).

    By default only grammar-consistent molecules (never None), drawing more latent points
    until n are found; ``consistent=False`` gives the raw samples, None for an invalid decode.
    ``max_draws`` bounds the draws (see :func:`iter_sample`); with ``return_stats`` the result
    is ``(molecules, SampleStats)``, whose ``acceptance`` is the consistency rate.
    ``temperature``, ``grammar`` (the SELFIES grammar mask) and ``top_p`` (nucleus sampling):
    None takes the model's own setting (see :func:`iter_sample`).

    Molecule i depends only on (``seed``, i, temperature, the model), so ``sample(model, k,
    seed=s)`` is the first k of ``sample(model, n, seed=s)`` for any n >= k, whatever
    ``batch_size``, threads or ``workers`` (see :func:`iter_sample`). A greedy sample decodes
    the same latent points as a sampled one with the same seed. ``seed=None`` draws fresh
    entropy (:func:`fresh_seed` gives one to record); a seed must be an integer >= 0.
    """
    out: list[str | None] = []
    parts = iter_sample(model, n, temperature=0.0 if greedy else temperature, seed=seed,
                        batch_size=batch_size, workers=workers, consistent=consistent,
                        max_draws=max_draws, grammar=grammar, top_p=top_p)
    for part in parts:
        out.extend(part)
    return (out, parts.stats) if return_stats else out
