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

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .checkpoint import Model
from .generate import decode, encode, sample, sample_latent

__all__ = ["MolvaeGenerator"]


class MolvaeGenerator:
    """Distribution-learning and goal-directed generator over a molvae model.

    Args:
        model: a loaded model; ``None`` loads the bundled default model.
        temperature: decoder temperature for ``generate``.
        seed: seed of every random draw; calls with the same arguments repeat exactly.
        population: latent points kept per round of the goal-directed search.
        rounds: rounds of the goal-directed search.
    """

    def __init__(self, model: Model | None = None, temperature: float = 1.0, seed: int = 0,
                 population: int = 200, rounds: int = 20, batch_size: int = 1000):
        if model is None:
            from . import load
            model = load()
        self.model = model
        self.temperature = temperature
        self.seed = seed
        self.population = population
        self.rounds = rounds
        self.batch_size = batch_size

    def generate(self, number_samples: int) -> list[str]:
        """Exactly ``number_samples`` SMILES; an invalid decode is the empty string."""
        out = sample(self.model, number_samples, temperature=self.temperature, seed=self.seed,
                     batch_size=self.batch_size)
        return [s or "" for s in out]

    def generate_optimized_molecules(self, scoring_function: Any, number_molecules: int,
                                     starting_population: Sequence[str] | None = None
                                     ) -> list[str]:
        """Latent-space evolution: keep the best points, perturb them, decode, score.

        Returns exactly ``number_molecules`` SMILES, best first (unique while enough distinct
        valid molecules were found; the best are repeated otherwise).
        """
        if number_molecules < 1:
            return []
        gen = torch.Generator(device=self.model.device).manual_seed(self.seed)
        scores: dict[str, float] = {}
        latent: dict[str, torch.Tensor] = {}

        def score_new(smiles: list[str | None], z: torch.Tensor) -> None:
            fresh = [(s, zi) for s, zi in zip(smiles, z) if s and s not in scores]
            uniq = dict(fresh)
            if not uniq:
                return
            names = list(uniq)
            values = scoring_function.score_list(names)
            for s, v in zip(names, values):
                v = float(v) if v is not None else math.nan
                scores[s] = v if math.isfinite(v) else -math.inf
                latent[s] = uniq[s]

        pop = max(self.population, number_molecules)
        if starting_population:
            z0 = encode(self.model, list(starting_population), errors="nan")
            z0 = z0[~torch.isnan(z0).any(1)]
            if len(z0):
                score_new(decode(self.model, z0), z0)
        z = sample_latent(self.model, pop, gen).cpu()
        score_new(decode(self.model, z), z)
        sigma = 0.5
        for _ in range(self.rounds):
            ranked = sorted(scores, key=scores.get, reverse=True)[: max(1, pop // 4)]
            if not ranked:  # nothing valid decoded yet: draw fresh points
                z = sample_latent(self.model, pop, gen).cpu()
                score_new(decode(self.model, z), z)
                continue
            parents = torch.stack([latent[s] for s in ranked]).to(self.model.device)
            pick = torch.randint(len(parents), (pop,), generator=gen, device=self.model.device)
            z = parents[pick] + sigma * torch.randn((pop, parents.shape[1]), generator=gen,
                                                    device=self.model.device)
            z = z.cpu()
            score_new(decode(self.model, z), z)
            sigma = max(0.1, sigma * 0.9)
        tries = 0
        while len(scores) < number_molecules and tries < 10:  # too few distinct molecules
            z = sample_latent(self.model, pop, gen).cpu()
            score_new(decode(self.model, z), z)
            tries += 1
        best = sorted(scores, key=scores.get, reverse=True)
        if not best:
            best = [""]
        # too few distinct molecules: repeat each in rank order, so the list stays best first
        reps = -(-number_molecules // len(best))
        return list(np.repeat(np.asarray(best, dtype=object), reps)[:number_molecules])
