"""The one process-pool map: data tokenizing, metrics features and property scoring use it.

Work is cut into chunks; each chunk is one task for a worker process, and results come back in
input order. Below ``min_parallel`` items (or with one job) the chunks run in this process:
starting workers costs more than small inputs save. Worker processes are started with fork on
Linux (fast, and safe here because no torch thread pool runs work while they start) and spawn
elsewhere; each worker uses one torch thread so that workers do not oversubscribe the cores.
The in-process path changes nothing process-wide (torch's thread count included).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

__all__ = ["pmap", "n_jobs", "pool_context", "chunks"]

CHUNK = 256  # items per task
MIN_PARALLEL = 2000  # below this many items a pool costs more than it saves


def n_jobs(jobs: int | None) -> int:
    """Worker count: ``None`` or 0 means every core."""
    return max(1, os.cpu_count() or 1) if not jobs else max(1, int(jobs))


def pool_context() -> mp.context.BaseContext:
    """The start method for molvae's worker processes."""
    # fork is fastest where it is safe; elsewhere (macOS, Windows) spawn
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of ``size`` items (the last may be shorter)."""
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _init(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """Runs first in every worker: one torch thread, then the caller's initializer."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    else:
        # torch is not loaded here (a spawned worker, or a parent that never imported it): if a
        # task imports it later, it starts with one thread; importing it now would cost seconds
        os.environ["OMP_NUM_THREADS"] = "1"
    if initializer is not None:
        initializer(*initargs)


def pmap(func: Callable[[Sequence[Any]], list], items: Sequence[Any], *,
         jobs: int | None = None, chunk_size: int = CHUNK, min_parallel: int = MIN_PARALLEL,
         progress: bool = False, desc: str = "", unit: str = "mol",
         initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> list:
    """Map a chunk function over ``items`` and return the concatenated results in order.

    Args:
        func: takes a chunk (a slice of ``items``) and returns one result per item. It must be
            picklable (a module-level function or a ``functools.partial`` of one).
        items: the inputs.
        jobs: worker processes; ``None`` or 0 = every core.
        chunk_size: items per task.
        min_parallel: below this many items, run in this process.
        progress: a progress bar on stderr.
        desc, unit: the bar's label and unit.
        initializer, initargs: run once in each worker (and once here, in-process, before the
            first chunk when no pool is used).

    Returns:
        ``func``'s results, one per item, in the order of ``items``.

    Example:
        >>> pmap(lambda part: [x * 2 for x in part], [1, 2, 3])  # small: runs in-process
        [2, 4, 6]
    """
    items = list(items)
    parts = list(chunks(items, max(1, chunk_size)))
    workers = min(n_jobs(jobs), len(parts))
    out: list = []
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress,
              file=sys.stderr) as bar:
        if workers <= 1 or len(items) < min_parallel:
            if initializer is not None:
                initializer(*initargs)
            results: Iterable[list] = map(func, parts)
            for part, res in zip(parts, results, strict=True):
                out.extend(_checked(func, part, res))
                bar.update(len(part))
        else:
            with pool_context().Pool(workers, initializer=_init,
                                     initargs=(initializer, initargs)) as pool:
                for part, res in zip(parts, pool.imap(func, parts), strict=True):
                    out.extend(_checked(func, part, res))
                    bar.update(len(part))
    return out


def _checked(func: Callable, part: Sequence[Any], res: list) -> list:
    # one result per item, or the alignment of every later item would be silently off
    if len(res) != len(part):
        raise ValueError(f"{getattr(func, '__name__', func)!r} returned {len(res)} results for "
                         f"a chunk of {len(part)} items")
    return res
