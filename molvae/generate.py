"""Strings in, strings out: sample, encode, decode, reconstruct, interpolate, neighbours, elbo.

Outputs are canonical RDKit SMILES; ``None`` marks an invalid or empty decode; lists keep the
input order and length. Small decodes (one chunk) are plain synchronous code on the calling
thread; large ones stream: chunks decode on parallel threads while post-processing (ids ->
SELFIES -> SMILES -> RDKit) runs in worker processes. Sampling keeps only grammar-consistent
molecules by default (the sampled SELFIES is the canonical SELFIES of its molecule); that check
runs in the same post-processing step.
"""

from __future__ import annotations

import math
import numbers
import os
import secrets
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import chem, density
from .checkpoint import Model
from .data import pad_ids
from .parallel import pool_context
from .vocab import EOS, Vocab

__all__ = ["MoleculeError", "LowAcceptanceError", "SampleStats", "SampleIterator", "sample",
           "iter_sample", "iter_sample_ids", "encode", "decode",
           "reconstruct", "reconstruction_rate", "active_units",
           "interpolate", "neighbours", "elbo", "prepare_inputs", "posterior", "sample_latent",
           "fresh_seed"]


class MoleculeError(ValueError):
    """Some inputs could not be encoded; ``.problems`` lists (index, input, status, reason)."""

    def __init__(self, problems: list[tuple[int, Any, str, str]]):
        self.problems = problems
        lines = [f"  [{i}] {text!r}: {status}: {reason}" for i, text, status, reason in problems]
        super().__init__(f"{len(problems)} input(s) could not be encoded:\n" + "\n".join(lines))


# -------------------------------------------------------------------------- post-processing
def _decoded(vocab: Vocab, ids: np.ndarray, settings: dict[str, Any] | None = None
             ) -> tuple[list[str | None], list[bool] | None]:
    """Id rows (B, L) -> canonical SMILES (None where invalid) and, with ``settings`` (the
    model's :func:`_check_settings`), each row's grammar-consistency flag
    (:func:`molvae.chem.consistent_many`); None without."""
    with chem.constraints(vocab.constraints):
        # a row that never reached [eos] ran past max_len: not a molecule the model allows
        ended = (ids == EOS).any(1)
        selfies = [vocab.decode(row) if end else None for row, end in zip(ids.tolist(), ended)]
        smiles = chem.selfies_to_smiles_many(selfies)
        flags = None if settings is None else chem.consistent_many(selfies, smiles, settings)
    return smiles, flags


def _smiles_of(vocab: Vocab, ids: np.ndarray) -> list[str | None]:
    """Id rows (B, L) -> canonical SMILES, None where invalid."""
    return _decoded(vocab, ids)[0]


def _ids_to_smiles(args: tuple[list[str], dict[str, int], np.ndarray]) -> list[str | None]:
    """_smiles_of for a worker process, which gets the vocabulary as plain data."""
    symbols, constraints, ids = args
    return _smiles_of(Vocab(tuple(symbols), constraints), ids)


def _ids_to_checked(args: tuple[list[str], dict[str, int], dict[str, Any], np.ndarray]
                    ) -> tuple[list[str | None], list[bool] | None]:
    """_decoded with consistency flags, for a worker process."""
    symbols, constraints, settings, ids = args
    return _decoded(Vocab(tuple(symbols), constraints), ids, settings)


def _check_settings(model: Model) -> dict[str, Any]:
    """The keyword arguments of :func:`molvae.chem.prepare` that the model's own tokenizer
    uses (its standardization policy against its vocabulary, as in :func:`prepare_inputs`):
    what the consistency check compares a sampled SELFIES string with."""
    cfg = model.config
    rules = chem.standardization_policy(cfg.largest_fragment, cfg.keep_stereo,
                                        (model.domain or {}).get("policy"))
    return chem.prepare_settings(rules, model.vocab.symbols)


class _PostProcessor:
    """Turns id batches into SMILES, in worker processes when that pays off; with
    ``settings``, into (SMILES, consistency flags) pairs."""

    def __init__(self, vocab: Vocab, workers: int | None, total: int,
                 settings: dict[str, Any] | None = None):
        self.payload: tuple[Any, ...] = (list(vocab.symbols), dict(vocab.constraints))
        self.func: Any = _ids_to_smiles
        if settings is not None:
            self.payload += (settings,)
            self.func = _ids_to_checked
        n = workers if workers is not None else max(1, (os.cpu_count() or 1) - 1)
        self.pool = (ProcessPoolExecutor(n, mp_context=pool_context())
                     if n >= 1 and total >= 4096 and workers != 0 else None)
        if self.pool is not None:
            # start the workers now, from this thread, before any decoding thread exists:
            # forking a process while other threads run torch code is not safe
            self.pool.submit(int).result()

    def submit(self, ids: np.ndarray) -> Any:
        if self.pool is None:
            return self.func((*self.payload, ids))
        return self.pool.submit(self.func, (*self.payload, ids))

    @staticmethod
    def result(item: Any) -> Any:
        return item.result() if isinstance(item, Future) else item

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


# ----------------------------------------------------------------------------- random draws
BLOCK = 64  # molecules per random block: a constant, so molecule i's draws never depend on n


def fresh_seed() -> int:
    """A random seed in [0, 2**31) from the operating system's entropy, to log and reuse."""
    return secrets.randbelow(2**31)


def _check_seed(seed: Any) -> int | None:
    """None, or the seed as a plain int; a negative or non-integer seed is a ValueError."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _base_seed(seed: int | None) -> int:
    """The seed the block generators derive from; fresh entropy when seed is None."""
    return int(np.random.SeedSequence().entropy) if seed is None else int(seed)


def _block_generator(model: Model, base_seed: int, block: int) -> torch.Generator:
    """Block ``block``'s own random stream, derived from (base_seed, block)."""
    state = np.random.SeedSequence([base_seed, block]).generate_state(2, np.uint64)
    return torch.Generator(device=model.device).manual_seed(int(state[0] >> 1))


def _randoms(model: Model, base_seed: int, start: int, size: int, draw_z: bool,
             temperature: float) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The random draws of molecules start .. start + size - 1, on the model's device: latent
    points z (size, Z) from the sampling density when ``draw_z``, and uniform token noise
    (size, T, V), T = max_len + 1, when temperature > 0 (None where not drawn).

    Molecule i's draws come from block i // BLOCK: each block's generator draws the z and then
    the noise of all its BLOCK rows, always the same shapes in the same order, and the rows
    asked for are cut out. So a molecule's draws do not depend on which molecules share its
    chunk, how large the chunk is, or which thread decodes it.
    """
    if size < 1:
        return None, None
    cfg = model.config
    zs, noises = [], []
    for b in range(start // BLOCK, (start + size - 1) // BLOCK + 1):
        gen = _block_generator(model, base_seed, b)
        rows = slice(max(start - b * BLOCK, 0), min(start + size - b * BLOCK, BLOCK))
        if draw_z:
            zs.append(sample_latent(model, BLOCK, gen)[rows])  # (rows, Z)
        if temperature > 0:
            u = torch.rand((BLOCK, cfg.max_len + 1, cfg.vocab_size), generator=gen,
                           device=model.device)  # (BLOCK, T, V)
            noises.append(u[rows])

    def join(parts: list[torch.Tensor]) -> torch.Tensor | None:
        return None if not parts else parts[0] if len(parts) == 1 else torch.cat(parts)

    return join(zs), join(noises)


def _decode_streams(model: Model) -> int:
    """Chunks decoded at once: one per CPU thread torch may use (each single-threaded, so a
    stream preempted by a post-processing worker does not stall the others as a shared
    intra-op thread pool would); one on a GPU."""
    return 1 if model.device.type != "cpu" else max(1, torch.get_num_threads())


def _stream(model: Model, total: int, z: torch.Tensor | None, temperature: float,
            seed: int | None, batch_size: int, workers: int | None,
            post_process: bool = True, settings: dict[str, Any] | None = None,
            offset: int = 0) -> Iterator[Any]:
    """Decode ``total`` latent points in chunks of ``batch_size`` and yield each chunk's result
    in order: SMILES lists, (SMILES, consistency flags) pairs with ``settings``
    (:func:`_check_settings`), or the raw id arrays with ``post_process=False``.

    The points are ``z`` (total, Z), or drawn from the sampling density when ``z`` is None;
    they are molecules ``offset`` .. ``offset + total - 1`` of the seed's sequence (their
    randoms are those of these indices).
    Chunks are decoded in parallel threads, each drawing its molecules' randoms from their
    blocks' generators (:func:`_randoms`), and handed to the post-processing workers as soon as
    they are done; a bounded number of chunks is in flight.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    base_seed = _base_seed(seed)
    streams = _decode_streams(model)
    post = _PostProcessor(model.vocab, workers, total, settings) if post_process else None
    threads = torch.get_num_threads()
    if streams > 1:
        torch.set_num_threads(1)  # the decoding threads started below inherit it
    pool = ThreadPoolExecutor(streams, thread_name_prefix="molvae-decode")

    def job(start: int, size: int) -> Any:
        with torch.no_grad():
            drawn, noise = _randoms(model, base_seed, offset + start, size, z is None,
                                    temperature)
            points = drawn if z is None else z[start: start + size]
            ids = _decode_ids(model, points, temperature, noise)
        # straight to the worker processes; in-process post-processing stays in the calling
        # thread (it switches selfies' global constraints, which threads must not share)
        return post.submit(ids) if post is not None and post.pool is not None else ids

    def finish(item: Any) -> Any:
        if post is None:
            return item
        return post.result(item if isinstance(item, Future) else post.submit(item))

    pending: deque[Future] = deque()
    window = streams + 3  # chunks in flight: bounds memory while keeping everyone busy
    try:
        model.net.eval()
        for start in range(0, total, batch_size):
            pending.append(pool.submit(job, start, min(batch_size, total - start)))
            while len(pending) > window:
                yield finish(pending.popleft().result())
        while pending:
            yield finish(pending.popleft().result())
    finally:
        pool.shutdown(cancel_futures=True)
        if post is not None:
            post.close()
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------- latents
def sample_latent(model: Model, n: int, generator: torch.Generator) -> torch.Tensor:
    """Draw n latent points from the model's sampling density (:mod:`molvae.density`)."""
    return density.sample(model.prior, model.prior_tensors, n, model.config.latent_dim,
                          generator, model.device)


def _decode_ids(model: Model, z: torch.Tensor, temperature: float,
                noise: torch.Tensor | None) -> np.ndarray:
    """Latent points z (N, Z) -> token ids (N, <= max_len + 1); ``noise`` from _randoms."""
    ids = model.net.decoder.generate(z.to(model.device).float(), model.config.max_len + 1,
                                     temperature=temperature, noise=noise)
    return ids.cpu().numpy()


# ---------------------------------------------------------------------------------- sampling
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


def iter_sample(model: Model, n: int, *, temperature: float = 1.0, seed: int | None = None,
                batch_size: int = 1000, workers: int | None = None, consistent: bool = True,
                max_draws: int | None = None) -> SampleIterator:
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

    Raw molecule i depends only on (``seed``, i, ``temperature``, the model): the first k
    molecules are the same for every n >= k, and do not depend on ``batch_size``, the number
    of threads or decoding streams, or ``workers``. (Each block of 64 molecules draws its
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
                                         consistent, max_draws, stats), stats)


def iter_sample_ids(model: Model, n: int, *, temperature: float = 1.0,
                    seed: int | None = None, batch_size: int = 1000) -> Iterator[np.ndarray]:
    """The token ids that raw :func:`iter_sample` (``consistent=False``) would turn into
    SMILES, batch by batch (PAD after [eos]); the pure decoding work, without SELFIES or
    RDKit."""
    yield from _sample_stream(model, n, temperature, seed, batch_size, None, False)


def _sample_stream(model: Model, n: int, temperature: float, seed: int | None,
                   batch_size: int, workers: int | None, post_process: bool,
                   consistent: bool = False, max_draws: int | None = None,
                   stats: SampleStats | None = None) -> Iterator[Any]:
    """iter_sample and iter_sample_ids: latent points drawn per block, then _stream."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not temperature >= 0:  # also catches NaN
        raise ValueError(f"temperature must be a number >= 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_draws is not None and (isinstance(max_draws, bool) or not isinstance(
            max_draws, numbers.Integral) or max_draws < 1):
        raise ValueError(f"max_draws must be an integer >= 1, got {max_draws!r}")
    seed = _check_seed(seed)
    stats = SampleStats(consistent) if stats is None else stats
    if consistent and post_process:
        limit = DRAWS_PER_MOLECULE * n + DRAWS_SLACK if max_draws is None else int(max_draws)
        yield from _consistent_stream(model, n, temperature, seed, batch_size, workers, limit,
                                      stats)
        return
    for part in _stream(model, n, None, temperature, seed, batch_size, workers, post_process):
        stats.drawn += len(part)
        stats.accepted += len(part)
        yield part


def _consistent_stream(model: Model, n: int, temperature: float, seed: int | None,
                       batch_size: int, workers: int | None, limit: int, stats: SampleStats
                       ) -> Iterator[list[str]]:
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
                         settings, offset=stats.drawn)
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


def sample(model: Model, n: int, temperature: float = 1.0, seed: int | None = None, *,
           greedy: bool = False, batch_size: int = 1000, workers: int | None = None,
           consistent: bool = True, max_draws: int | None = None, return_stats: bool = False
           ) -> list[str | None] | tuple[list[str | None], SampleStats]:
    """Sample n molecules; ``greedy=True`` decodes each z by argmax (temperature 0).

    By default only grammar-consistent molecules (never None), drawing more latent points
    until n are found; ``consistent=False`` gives the raw samples, None for an invalid decode.
    ``max_draws`` bounds the draws (see :func:`iter_sample`); with ``return_stats`` the result
    is ``(molecules, SampleStats)``, whose ``acceptance`` is the consistency rate.

    Molecule i depends only on (``seed``, i, temperature, the model), so ``sample(model, k,
    seed=s)`` is the first k of ``sample(model, n, seed=s)`` for any n >= k, whatever
    ``batch_size``, threads or ``workers`` (see :func:`iter_sample`). A greedy sample decodes
    the same latent points as a sampled one with the same seed. ``seed=None`` draws fresh
    entropy (:func:`fresh_seed` gives one to record); a seed must be an integer >= 0.
    """
    out: list[str | None] = []
    parts = iter_sample(model, n, temperature=0.0 if greedy else temperature, seed=seed,
                        batch_size=batch_size, workers=workers, consistent=consistent,
                        max_draws=max_draws)
    for part in parts:
        out.extend(part)
    return (out, parts.stats) if return_stats else out


def _decode_one_chunk(model: Model, z: torch.Tensor, temperature: float,
                      seed: int | None, settings: dict[str, Any] | None = None
                      ) -> tuple[list[str | None], list[bool] | None]:
    """What _stream gives for latent points that fit in one chunk, as plain synchronous code:
    one decoder call on the calling thread with the caller's torch thread settings, then
    SELFIES/RDKit in this process. The same per-block noise, so the same molecules; with
    ``settings`` also their consistency flags (None without)."""
    model.net.eval()
    with torch.no_grad():
        _, noise = _randoms(model, _base_seed(seed), 0, len(z), False, temperature)
        ids = _decode_ids(model, z, temperature, noise)  # (N, <= max_len + 1)
    return _decoded(model.vocab, ids, settings)


def decode(model: Model, z: torch.Tensor | np.ndarray, temperature: float = 0.0,
           seed: int | None = None, *, batch_size: int = 1000, workers: int | None = 0,
           with_consistency: bool = False
           ) -> list[str | None] | tuple[list[str | None], list[bool]]:
    """Decode latent points (N, Z) to SMILES; temperature 0 is greedy.

    With ``with_consistency`` the result is ``(smiles, flags)``: ``flags[i]`` says whether
    row i's decoded SELFIES string is grammar-consistent, the canonical SELFIES of its own
    molecule (see :func:`iter_sample`; False for an invalid decode). One point gives one
    answer either way: nothing is re-drawn.

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
        smiles, flags = _decode_one_chunk(model, z, temperature, seed, settings)
        return (smiles, flags) if with_consistency else smiles  # type: ignore[return-value]
    parts = list(_stream(model, len(z), z, temperature, seed, batch_size, workers,
                         settings=settings))
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


def prepare_inputs(model: Model, items: Sequence[Any]) -> PreparedInputs:
    """Standardize with the model's policy (:func:`molvae.domain.policy`, resolved against its
    vocabulary) and map to ids; problems listed per item, notes kept per item."""
    if isinstance(items, (str, bytes)) or chem.is_mol(items):
        raise TypeError("pass a list of molecules, e.g. encode(model, ['CCO'])")
    cfg = model.config
    rules = chem.standardization_policy(cfg.largest_fragment, cfg.keep_stereo,
                                        (model.domain or {}).get("policy"))
    settings = chem.prepare_settings(rules, model.vocab.symbols)
    ids: list[list[int] | None] = []
    canonical: list[str | None] = []
    notes: list[str] = []
    problems = []
    with chem.constraints(model.vocab.constraints):
        for i, item in enumerate(items):
            p = chem.prepare(item, **settings)
            shown = chem.canonical_smiles(item) if chem.is_mol(item) else item
            canonical.append(p.smiles)
            notes.append(p.note)
            if not p.ok:
                problems.append((i, shown, p.status, p.reason))
                ids.append(None)
                continue
            unknown = model.vocab.unknown(p.selfies)
            if unknown:
                charged = any(("+" in s or "-" in s) for s in unknown)
                hint = " (charged atoms left after neutralization)" if (
                    charged and settings["neutralize"]) else ""
                problems.append((i, shown, chem.UNKNOWN_TOKEN, "symbols not in the model "
                                 "vocabulary: " + " ".join(dict.fromkeys(unknown)) + hint))
                ids.append(None)
                continue
            row = model.vocab.encode(p.selfies)
            if len(row) > cfg.max_len:
                problems.append((i, shown, chem.TOO_LONG, f"{len(row)} SELFIES symbols, the "
                                 f"model allows {cfg.max_len}"))
                ids.append(None)
                continue
            ids.append(row)
    smiles = [None if r is None else p for r, p in zip(ids, canonical)]
    return PreparedInputs(ids, problems, smiles, notes)


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
    prep = prepare_inputs(model, smiles)
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


