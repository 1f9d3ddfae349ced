"""Latent-space property optimization: ``molvae.optimize(model, objective, ...)``.

Every method proposes latent points, decodes them greedily, and is told the objective's
RDKit-computed scores of the decoded molecules through an :class:`~molvae.oracle.Oracle` that
counts calls as the PMO benchmark does (a call is a new canonical valid SMILES; repeats are
free; the budget is never exceeded). Methods:

- ``"bo"``: trust-region Bayesian optimization with BoTorch (:mod:`molvae.bo`).
- ``"gradient"``: gradient ascent on z against a property predictor (:mod:`molvae.gradient`).
- ``"cmaes"``: CMA-ES from the ``cma`` package.
- ``"evolution"``: latent evolution (perturb the best latents).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import Model
from .config import suggest
from .oracle import Constraints, OptimizeResult, Oracle
from .search import Search

__all__ = ["optimize", "method_options", "check_options", "METHODS", "DEFAULT_METHOD"]

log = logging.getLogger(__name__)


# each method: (module, function); bo and gradient (botorch, torch heads) are imported only
# when used
METHODS: dict[str, tuple[str, str]] = {
    "bo": ("bo", "turbo"),
    "gradient": ("gradient", "gradient_ascent"),
    "cmaes": ("search", "cmaes"),
    "evolution": ("search", "evolution"),
}
DEFAULT_METHOD = "evolution"


def _method(name: str) -> Callable[..., None]:
    """The function that runs method ``name`` on a :class:`Search` (a clear error if unknown)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}{suggest(str(name), list(METHODS))}; "
                         f"choose from {', '.join(METHODS)}")
    module, func = METHODS[name]
    return getattr(importlib.import_module(f".{module}", __package__), func)


def method_options(method: str) -> dict[str, Any]:
    """The settings ``method`` takes as ``**options`` of :func:`optimize`, with defaults.

    Example:
        >>> method_options("cmaes")
        {'population': 50, 'sigma0': 1.0, 'init': 100}
    """
    return {k: p.default for k, p in inspect.signature(_method(method)).parameters.items()
            if k != "search"}


def check_options(method: str, options: dict[str, Any]) -> None:
    """Every option is one the method takes (a misspelling gets a suggestion)."""
    if not options:
        return
    known = list(method_options(method))
    for key in options:
        if key not in known:
            raise ValueError(f"unknown option {key!r} for method {method!r}"
                             f"{suggest(key, known)}; its options: {', '.join(known)}")


def _start_molecules(start: Any, smiles_column: str | None = None) -> list[str] | None:
    """None (the sampling density), one SMILES, a list of SMILES/Mols, or a molecule file."""
    if start is None:
        return None
    if isinstance(start, (str, Path)):
        text = str(start)
        path = Path(text)
        suffixes = [s.lower() for s in path.suffixes]
        if path.is_file() or any(s in (".smi", ".csv", ".tsv", ".sdf", ".gz") for s in suffixes):
            from .readers import read_molecules
            raw = read_molecules(path, smiles_column)
            return [t for i, t in enumerate(raw.texts) if t and i not in raw.errors]
        return [text]
    return list(start)


def _score_start(search: Search, mols: list[Any], cap: int) -> None:
    """Score the start molecules (at most ``cap``, a seeded random subset) as oracle calls."""
    if not mols:
        raise ValueError("start holds no molecules")
    if len(mols) > cap:
        pick = np.sort(search.rng.choice(len(mols), cap, replace=False))
        mols = [mols[i] for i in pick]
    search.evaluate_molecules(mols)
    if not len(search.observed()[1]):
        log.warning("none of the %d start molecules could be scored; starting from the "
                    "sampling density", len(mols))


def optimize(model: Model, objective: Any, method: str = DEFAULT_METHOD, budget: int = 1000,
             seed: int | None = 0, start: Any = None,
             constraints: Constraints | dict[str, Any] | None = None, *,
             similarity_to: str | None = None, min_similarity: float | None = None,
             max_heavy_atoms: int | None = None, max_start: int | None = None,
             progress: bool = False, callback: Callable[[Search], None] | None = None,
             inconsistent: str = "keep", **options: Any) -> OptimizeResult:
    """Search the latent space for molecules that score high on ``objective``.

    Args:
        model: a loaded model (:func:`molvae.load`).
        objective: a registered name (``"qed"``, ``"plogp"``, ...), an objective built from
            :mod:`molvae.properties` pieces, or any callable ``f(list[str]) -> Sequence[float]``
            (higher is better). A molecule it raises on or gives NaN for scores NaN; the run
            goes on.
        method: ``"bo"``, ``"gradient"``, ``"cmaes"`` or ``"evolution"``.
        budget: oracle calls (new canonical valid SMILES) at most.
        seed: seeds every random draw; the same arguments give the same run.
        start: ``None`` (the model's sampling density), a SMILES, a list of SMILES/Mols, or
            a molecule file (.smi/.csv/.sdf). Start molecules are scored (these are oracle
            calls); from a file at most ``max_start`` (default budget // 4) of them, a seeded
            random subset, and the search starts from the best.
        constraints: a :class:`~molvae.oracle.Constraints` or a dict of its fields.
        similarity_to, min_similarity, max_heavy_atoms: shortcuts for the constraint fields.
        progress: a progress bar on stderr with the best score and the calls used.
        callback: called with the search state after every evaluated batch.
        inconsistent: what to do with a decode that is not grammar-consistent (a valid
            molecule the SELFIES decoder repaired): ``"keep"`` scores it like any other,
            ``"invalid"`` spends no oracle call on it, ``"redecode"`` samples the point again
            (up to 3 times) for a consistent decode. Every call records its flag
            (``Call.consistent``); the README's optimization section measures the three.
        **options: the method's own settings (e.g. ``population=`` for evolution;
            :func:`method_options` lists them with their defaults). An unknown one raises
            ``ValueError`` with a suggestion.

    Returns:
        An :class:`~molvae.oracle.OptimizeResult` (``.top(k)``, ``.history``,
        ``.oracle_calls``, ``.write_csv``, ``.write_sdf``).
    """
    run = _method(method)
    check_options(method, options)
    cons = Constraints.make(constraints, similarity_to=similarity_to,
                            min_similarity=min_similarity, max_heavy_atoms=max_heavy_atoms)
    oracle = Oracle(objective, budget, cons)
    mols = _start_molecules(start)
    t0 = time.perf_counter()
    bar = _progress_bar(budget, progress)
    hooks = [h for h in (bar.hook if bar else None, callback) if h is not None]

    def on_batch(s: Search) -> None:
        for h in hooks:
            h(s)

    search = Search(model, oracle, seed, on_batch=on_batch, inconsistent=inconsistent)
    try:
        if mols is not None:
            _score_start(search, mols, max(1, budget // 4) if max_start is None
                         else int(max_start))
        run(search, **options)
    finally:
        if bar is not None:
            bar.close()
    name = getattr(oracle.objective, "name", str(objective))
    return OptimizeResult(objective=name, method=method, budget=budget, seed=search.seed,
                          history=list(oracle.history), seconds=time.perf_counter() - t0,
                          objective_seconds=oracle.objective_seconds,
                          infeasible=len(oracle.infeasible), decoded=search.decoded,
                          options={**options, **({} if inconsistent == "keep" else
                                                 {"inconsistent": inconsistent})})


class _Progress:
    """A tqdm bar over oracle calls that shows the best score so far."""

    def __init__(self, budget: int):
        import sys

        from tqdm.auto import tqdm
        self.bar = tqdm(total=budget, desc="optimizing", unit="call", file=sys.stderr)

    def hook(self, search: Search) -> None:
        self.bar.n = search.oracle.calls
        best = search.oracle.best()
        self.bar.set_postfix_str(f"best {best:.4g}" if math.isfinite(best) else "best -")

    def close(self) -> None:
        self.bar.close()


def _progress_bar(budget: int, enabled: bool) -> _Progress | None:
    return _Progress(budget) if enabled else None
