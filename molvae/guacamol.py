"""GuacaMol-compatible generators, without depending on the guacamol package.

GuacaMol's benchmarks call ``generate(number_samples)`` (distribution learning) and
``generate_optimized_molecules(scoring_function, number_molecules, starting_population)``
(goal-directed), scoring through ``scoring_function.score_list(smiles)``. Both always return
exactly the number of strings asked for.

    from molvae.guacamol import MolvaeGenerator
    gen = MolvaeGenerator(molvae.load(), seed=0)
    smiles = gen.generate(10_000)
    best = gen.generate_optimized_molecules(scoring_function, 100)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .checkpoint import Model
from .generate import sample
from .optimize import optimize

__all__ = ["MolvaeGenerator"]


class MolvaeGenerator:
    """Distribution-learning and goal-directed generator over a molvae model.

    Args:
        model: a loaded model; ``None`` loads the bundled default model.
        temperature: decoder temperature for ``generate``.
        seed: seed of every random draw; calls with the same arguments repeat exactly.
        population: latent points per round of the goal-directed search.
        rounds: rounds of the goal-directed search (with ``population``, its budget).
        method: the :func:`molvae.optimize` method of the goal-directed search.
    """

    def __init__(self, model: Model | None = None, temperature: float = 1.0, seed: int = 0,
                 population: int = 200, rounds: int = 20, batch_size: int = 1000,
                 method: str = "evolution"):
        if model is None:
            from . import load
            model = load()
        self.model = model
        self.temperature = temperature
        self.seed = seed
        self.population = population
        self.rounds = rounds
        self.batch_size = batch_size
        self.method = method

    def generate(self, number_samples: int) -> list[str]:
        """Exactly ``number_samples`` SMILES; an invalid decode is the empty string."""
        out = sample(self.model, number_samples, temperature=self.temperature, seed=self.seed,
                     batch_size=self.batch_size)
        return [s or "" for s in out]

    def generate_optimized_molecules(self, scoring_function: Any, number_molecules: int,
                                     starting_population: Sequence[str] | None = None
                                     ) -> list[str]:
        """Goal-directed generation through :func:`molvae.optimize` (``self.method``), scoring
        via ``scoring_function.score_list``; the budget is ``population * (rounds + 1)``
        oracle calls (at least ``number_molecules``).

        Returns exactly ``number_molecules`` SMILES, best first (unique while enough distinct
        valid molecules were found; the best are repeated otherwise).
        """
        if number_molecules < 1:
            return []
        budget = max(number_molecules, self.population * (self.rounds + 1))
        options = {"population": self.population} if self.method in ("evolution", "cmaes") else {}
        start = [s for s in starting_population or [] if isinstance(s, str) and s.strip()]
        result = optimize(self.model, scoring_function.score_list, method=self.method,
                          budget=budget, seed=self.seed, start=start or None,
                          max_start=budget // 2, **options)
        best = [s for s, _ in result.top(budget)] or [""]
        # too few distinct molecules: repeat each in rank order, so the list stays best first
        reps = -(-number_molecules // len(best))
        return list(np.repeat(np.asarray(best, dtype=object), reps)[:number_molecules])
