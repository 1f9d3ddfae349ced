"""The decoding engine under sampling and decoding: latent points to token ids to SMILES.

Randomness comes in fixed blocks of 64 molecules, each with its own generator derived from
(seed, block), so molecule i's latent point and token noise depend only on the seed and i.
Small decodes (one chunk) are plain synchronous code on the calling thread; large ones stream:
chunks decode on parallel threads while post-processing (ids -> SELFIES -> SMILES -> RDKit,
and the grammar-consistency check) runs in worker processes.
"""

from __future__ import annotations

import numbers
import os
import secrets
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from . import chem, density
from .checkpoint import Model
from .grammar import Grammar, forced
from .parallel import pool_context
from .vocab import EOS, Vocab

__all__ = ["BLOCK", "fresh_seed", "sample_latent", "decode_strings", "consistency"]


# -------------------------------------------------------------------------- post-processing
def _strings(vocab: Vocab, ids: np.ndarray) -> tuple[list[str | None], list[str | None]]:
    """Id rows (B, L) -> the SELFIES strings and their canonical SMILES (None where invalid)."""
    with chem.constraints(vocab.constraints):
        # a row that never reached [eos] ran past max_len: not a molecule the model allows
        ended = (ids == EOS).any(1)
        selfies = [vocab.decode(row) if end else None for row, end in zip(ids.tolist(), ended)]
        return selfies, chem.selfies_to_smiles_many(selfies)


def _flags(vocab: Vocab, selfies: list[str | None], smiles: list[str | None],
           settings: dict[str, Any]) -> list[bool]:
    """Grammar-consistency flags (:func:`molvae.chem.consistent_many`) of decoded strings."""
    with chem.constraints(vocab.constraints):
        return chem.consistent_many(selfies, smiles, settings)


def _decoded(vocab: Vocab, ids: np.ndarray, settings: dict[str, Any] | None = None
             ) -> tuple[list[str | None], list[bool] | None]:
    """Id rows (B, L) -> canonical SMILES (None where invalid) and, with ``settings`` (the
    model's :func:`_check_settings`), each row's grammar-consistency flag; None without."""
    selfies, smiles = _strings(vocab, ids)
    return smiles, None if settings is None else _flags(vocab, selfies, smiles, settings)


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
            offset: int = 0, grammar: bool = False, top_p: float = 1.0) -> Iterator[Any]:
    """Decode ``total`` latent points in chunks of ``batch_size`` and yield each chunk's result
    in order: SMILES lists, (SMILES, consistency flags) pairs with ``settings``
    (:func:`_check_settings`), or the raw id arrays with ``post_process=False``.

    The points are ``z`` (total, Z), or drawn from the sampling density when ``z`` is None;
    they are molecules ``offset`` .. ``offset + total - 1`` of the seed's sequence (their
    randoms are those of these indices). With ``grammar`` the decoder samples under the
    SELFIES grammar mask (:mod:`molvae.grammar`), and with ``top_p`` < 1 from the nucleus of
    each step's distribution (:func:`molvae.model.nucleus`).
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
            ids, kept = _decode_ids(model, points, temperature, noise, grammar, top_p)
        # straight to the worker processes; in-process post-processing stays in the calling
        # thread (it switches selfies' global constraints, which threads must not share)
        return (post.submit(ids) if post is not None and post.pool is not None else ids,
                kept)

    def finish(done: tuple[Any, np.ndarray | None]) -> Any:
        item, kept = done
        if post is None:
            return item
        out = post.result(item if isinstance(item, Future) else post.submit(item))
        return out if settings is None else (out[0], _unforced(out[1], kept))

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
                noise: torch.Tensor | None, grammar: bool = False, top_p: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Latent points z (N, Z) -> token ids (N, <= max_len + 1); ``noise`` from _randoms.
    With ``grammar``, decoded under the SELFIES grammar mask, and also each row's least
    probability mass the mask kept (``Grammar.kept``, (N,); None without the mask); ``top_p``
    < 1 samples from each step's nucleus (:func:`molvae.model.nucleus`)."""
    steps = model.config.max_len + 1
    mask = Grammar(model.vocab, len(z), steps, temperature) if grammar else None
    ids = model.net.decoder.generate(z.to(model.device).float(), steps,
                                     temperature=temperature, noise=noise, grammar=mask,
                                     top_p=top_p)
    return ids.cpu().numpy(), None if mask is None else mask.kept.numpy()


def _unforced(flags: list[bool], kept: np.ndarray | None) -> list[bool]:
    """Consistency flags of decodes under the grammar mask: a forced decode (the allowed
    tokens held less than ``molvae.grammar.MIN_MASS`` of the probability at some step: the
    mask, not the model, chose its string) does not count as consistent."""
    if kept is None:
        return flags
    return [f and not x for f, x in zip(flags, forced(kept).tolist())]


def decode_strings(model: Model, z: torch.Tensor, temperature: float, seed: int | None
                   ) -> tuple[list[str | None], list[str | None]]:
    """The SELFIES strings and SMILES that ``decode(model, z, temperature, seed)`` decodes, as
    plain synchronous code (sized for an optimizer's batches), so that a caller can check the
    consistency of only the rows it needs (:func:`consistency`)."""
    model.net.eval()
    with torch.no_grad():
        _, noise = _randoms(model, _base_seed(seed), 0, len(z), False, temperature)
        ids, _ = _decode_ids(model, z, temperature, noise)  # (N, <= max_len + 1)
    return _strings(model.vocab, ids)


def consistency(model: Model, selfies: list[str | None], smiles: list[str | None]
                ) -> list[bool]:
    """Grammar-consistency flags of strings :func:`decode_strings` gave."""
    return _flags(model.vocab, selfies, smiles, _check_settings(model))


def _decode_one_chunk(model: Model, z: torch.Tensor, temperature: float,
                      seed: int | None, settings: dict[str, Any] | None = None,
                      grammar: bool = False) -> tuple[list[str | None], list[bool] | None]:
    """What _stream gives for latent points that fit in one chunk, as plain synchronous code:
    one decoder call on the calling thread with the caller's torch thread settings, then
    SELFIES/RDKit in this process. The same per-block noise, so the same molecules; with
    ``settings`` also their consistency flags (None without)."""
    model.net.eval()
    with torch.no_grad():
        _, noise = _randoms(model, _base_seed(seed), 0, len(z), False, temperature)
        ids, kept = _decode_ids(model, z, temperature, noise, grammar)  # (N, <= L + 1)
    smiles, flags = _decoded(model.vocab, ids, settings)
    return smiles, None if flags is None else _unforced(flags, kept)
