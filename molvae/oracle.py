"""The oracle an optimizer talks to: budget, cache, constraints, history, and the result.

Calls are counted the way the PMO benchmark counts them (Gao et al. 2022, "Sample Efficiency
Matters: A Benchmark for Practical Molecular Optimization", NeurIPS Datasets and Benchmarks):
a call is one new canonical valid SMILES handed to the objective. A molecule seen before is
answered from the cache and costs nothing; an invalid or empty decode never reaches the
objective and is never returned. The budget is a hard cap: once it is spent, new molecules
get no score.

Constraints (similarity to a reference, a heavy-atom cap, property windows) are RDKit checks
made *before* the objective is called: a molecule that breaks one is not an oracle call, is
remembered as infeasible, and is never returned as a result.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import chem, properties, sdf
from .config import suggest
from .io import flag_text

__all__ = ["Call", "Constraints", "Oracle", "OptimizeResult", "auc_top_k"]


@dataclass(frozen=True)
class Call:
    """One oracle call: its 1-based index, the molecule, the objective's value (NaN when the
    objective failed on it), the surrogate's prediction where a method made one, and whether
    the decoded SELFIES string was grammar-consistent (None: not decoded, a start molecule)."""

    index: int
    smiles: str
    score: float
    predicted: float | None = None
    consistent: bool | None = None


@dataclass(frozen=True)
class Constraints:
    """What every returned molecule must satisfy.

    Args:
        similarity_to: reference SMILES; with ``min_similarity``, the Morgan (r=2, 2048 bits)
            Tanimoto similarity to it must be at least that.
        min_similarity: the similarity floor (0 disables it).
        max_heavy_atoms: the heavy-atom cap (None disables it).
        windows: ``{property: (low, high)}``: each registered property must lie in its closed
            window (either bound may be None).
    """

    similarity_to: str | None = None
    min_similarity: float = 0.0
    max_heavy_atoms: int | None = None
    windows: tuple[tuple[str, float | None, float | None], ...] = ()

    @classmethod
    def make(cls, value: Constraints | dict[str, Any] | None = None, **extra: Any
             ) -> Constraints:
        """From a Constraints, a dict of its fields, or None, with keyword overrides."""
        if isinstance(value, Constraints):
            base = {f: getattr(value, f) for f in cls.__dataclass_fields__}
        else:
            base = dict(value or {})
            unknown = set(base) - set(cls.__dataclass_fields__)
            if unknown:
                key = sorted(unknown)[0]
                raise ValueError(f"unknown constraint {key!r}"
                                 f"{suggest(key, list(cls.__dataclass_fields__))}")
        base.update({k: v for k, v in extra.items() if v is not None})
        windows = base.get("windows") or ()
        if isinstance(windows, dict):
            windows = tuple((k, *v) for k, v in windows.items())
        base["windows"] = tuple((str(k), lo, hi) for k, lo, hi in windows)
        out = cls(**base)
        out.validate()
        return out

    def validate(self) -> None:
        if not 0.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be in [0, 1], got {self.min_similarity}")
        if self.min_similarity > 0 and not self.similarity_to:
            raise ValueError("min_similarity needs similarity_to (the reference molecule)")
        if self.similarity_to is not None and chem.mol_from_smiles(self.similarity_to) is None:
            raise ValueError(f"similarity_to {self.similarity_to!r} is not a valid SMILES")
        if self.max_heavy_atoms is not None and self.max_heavy_atoms < 1:
            raise ValueError(f"max_heavy_atoms must be >= 1, got {self.max_heavy_atoms}")
        for name, lo, hi in self.windows:
            properties.get_objective(name)  # a misspelled property fails here, with a hint
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"window {name}: low {lo} > high {hi}")

    @property
    def active(self) -> bool:
        return bool(self.min_similarity > 0 or self.max_heavy_atoms is not None
                    or self.windows)

    def feasible(self, smiles: Sequence[str]) -> np.ndarray:
        """One bool per molecule: does it satisfy every constraint?"""
        ok = np.ones(len(smiles), bool)
        if not self.active or not len(smiles):
            return ok
        smiles = list(smiles)
        if self.min_similarity > 0:
            sim = np.asarray(chem.tanimoto_to(self.similarity_to, smiles), float)
            ok &= np.nan_to_num(sim, nan=-1.0) >= self.min_similarity
        if self.max_heavy_atoms is not None:
            heavy = properties.score(smiles, "heavy_atoms")
            ok &= np.nan_to_num(heavy, nan=math.inf) <= self.max_heavy_atoms
        for name, lo, hi in self.windows:
            v = properties.score(smiles, name)
            inside = np.isfinite(v)
            if lo is not None:
                inside &= v >= lo
            if hi is not None:
                inside &= v <= hi
            ok &= inside
        return ok


class Oracle:
    """Scores molecules under a hard budget of objective calls, with a cache.

    Args:
        objective: anything :func:`molvae.properties.get_objective` takes.
        budget: the most objective calls (new canonical valid SMILES) this oracle will make.
        constraints: checked before the objective; infeasible molecules cost nothing.
    """

    def __init__(self, objective: Any, budget: int, constraints: Constraints | None = None):
        if int(budget) < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.objective = properties.get_objective(objective)
        self.budget = int(budget)
        self.constraints = constraints or Constraints()
        self.cache: dict[str, float] = {}
        self.infeasible: set[str] = set()
        self.history: list[Call] = []
        self.objective_seconds = 0.0
        self.errors = 0  # calls on which the objective raised or gave no finite value
        self._best = math.nan  # the best finite score so far, kept as calls come in

    @property
    def calls(self) -> int:
        return len(self.history)

    @property
    def remaining(self) -> int:
        return self.budget - len(self.history)

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0

    def best(self) -> float:
        """The best finite score so far (NaN before any)."""
        return self._best

    def __call__(self, smiles: Sequence[str | None],
                 predicted: Sequence[float] | None = None,
                 consistent: Sequence[bool] | None = None) -> np.ndarray:
        """Scores aligned with ``smiles``: the objective's value for known and newly called
        molecules; NaN for None, for infeasible molecules, for molecules the objective failed
        on, and for new molecules once the budget is spent (those are not called).
        ``consistent`` (per item) is recorded in the calls it makes."""
        fresh: dict[str, float | None] = {}
        flags: dict[str, bool | None] = {}
        for i, s in enumerate(smiles):
            if s and s not in self.cache and s not in self.infeasible and s not in fresh:
                fresh[s] = None if predicted is None else float(predicted[i])
            if s and consistent is not None:  # one consistent decode makes the molecule so
                flags[s] = bool(flags.get(s)) or bool(consistent[i])
        if fresh and self.constraints.active:
            names = list(fresh)
            for s, ok in zip(names, self.constraints.feasible(names)):
                if not ok:
                    self.infeasible.add(s)
                    del fresh[s]
        new = list(fresh)[: max(0, self.remaining)]
        if new:
            t0 = time.perf_counter()
            values = properties.score(new, self.objective)
            self.objective_seconds += time.perf_counter() - t0
            for s, v in zip(new, values):
                v = float(v)
                self.errors += not math.isfinite(v)
                if math.isfinite(v) and not v <= self._best:  # also replaces the initial NaN
                    self._best = v
                self.cache[s] = v
                self.history.append(Call(len(self.history) + 1, s, v, fresh[s], flags.get(s)))
        return np.array([self.cache.get(s, math.nan) if s else math.nan for s in smiles],
                        dtype=float)


def auc_top_k(scores: Sequence[float], k: int = 10, freq: int = 100,
              budget: int | None = None) -> float:
    """PMO's area under the curve of the mean top-k score against oracle calls.

    The mean of the best k scores so far is taken every ``freq`` calls (and at the last call);
    the curve is integrated with the trapezoid rule, held at its last value up to ``budget``
    when the run stopped early, and divided by ``budget`` (default: the number of calls).
    Failed calls (NaN) count as calls but add no score.
    """
    vals = np.asarray(scores, float)
    n = len(vals)
    budget = n if budget is None else int(budget)
    if n == 0 or budget < 1:
        return 0.0

    def top_mean(m: int) -> float:
        head = vals[:m]
        head = np.sort(head[np.isfinite(head)])[::-1][:k]
        return float(head.mean()) if len(head) else 0.0

    marks = list(range(freq, min(n, budget) + 1, freq))
    if not marks or marks[-1] != min(n, budget):
        marks.append(min(n, budget))
    area, prev_m, prev_v = 0.0, 0, 0.0
    for m in marks:
        v = top_mean(m)
        area += (m - prev_m) * (v + prev_v) / 2
        prev_m, prev_v = m, v
    area += (budget - prev_m) * prev_v
    return area / budget


@dataclass
class OptimizeResult:
    """What :func:`molvae.optimize` found.

    ``history`` holds every oracle call in order; ``top(k)`` the best unique molecules.
    """

    objective: str
    method: str
    budget: int
    seed: int | None
    history: list[Call] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole run
    objective_seconds: float = 0.0  # of which inside the objective
    infeasible: int = 0  # distinct molecules rejected by the constraints (not oracle calls)
    decoded: int = 0  # latent points decoded
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def oracle_calls(self) -> int:
        return len(self.history)

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The k best molecules with finite scores, unique, best first (ties: earlier call)."""
        calls = sorted((c for c in self.history if math.isfinite(c.score)),
                       key=lambda c: (-c.score, c.index))
        return [(c.smiles, c.score) for c in calls[:k]]

    @property
    def best(self) -> tuple[str, float] | None:
        top = self.top(1)
        return top[0] if top else None

    def auc_top_k(self, k: int = 10, freq: int = 100) -> float:
        """The PMO metric over this run's calls, normalised by the budget."""
        return auc_top_k([c.score for c in self.history], k, freq, self.budget)

    def write_csv(self, path: str | Path, k: int | None = None) -> None:
        """The top k molecules (all scored ones with ``k=None``), best first, with their
        rank, score and the call that found them."""
        rows = sorted((c for c in self.history if math.isfinite(c.score)),
                      key=lambda c: (-c.score, c.index))
        rows = rows if k is None else rows[:k]
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["rank", "smiles", self.objective, "call", "predicted", "consistent"])
            for r, c in enumerate(rows, 1):
                w.writerow([r, c.smiles, f"{c.score:.6g}", c.index,
                            "" if c.predicted is None else f"{c.predicted:.6g}",
                            flag_text(c.consistent)])

    def write_history(self, path: str | Path) -> None:
        """Every oracle call in order: call, smiles, score, predicted."""
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["call", "smiles", "score", "predicted", "consistent"])
            for c in self.history:
                w.writerow([c.index, c.smiles, "" if math.isnan(c.score) else f"{c.score:.6g}",
                            "" if c.predicted is None else f"{c.predicted:.6g}",
                            flag_text(c.consistent)])

    def write_sdf(self, path: str | Path, k: int | None = None) -> None:
        """The top k molecules as SDF records titled by rank, with score and call."""
        top = self.top(len(self.history) if k is None else k)
        index = {c.smiles: c.index for c in self.history}
        flags = {c.smiles: flag_text(c.consistent) for c in self.history}
        sdf.write_sdf(str(path), [(s, {"_Name": f"rank {r}", "smiles": s,
                                        self.objective: f"{v:.6g}", "call": index[s],
                                        "consistent": flags[s]})
                                   for r, (s, v) in enumerate(top, 1)])
