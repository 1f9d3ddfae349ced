"""The latent search loop every optimizer method shares, and the two population methods.

A method proposes latent points; :meth:`Search.evaluate` decodes them (greedy), asks the oracle
for the molecules' scores and re-encodes every new molecule to its posterior mean, so that the
methods learn from where the *decoded molecule* sits in latent space rather than from the
proposed point (the two can be far apart where the decoder maps a region onto a molecule
from elsewhere).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import Model
from .decoding import consistency, decode_strings
from .generate import decode, encode, posterior, prepare_inputs, sample_latent
from .oracle import Oracle

__all__ = ["Search", "Batch", "evolution", "cmaes", "INCONSISTENT"]

# what to do with a decode whose SELFIES string is not grammar-consistent (a valid molecule
# the SELFIES decoder repaired): score it as any other ("keep"), treat it as an invalid decode
# ("invalid": no oracle call), or decode the point again, sampling, up to REDECODES times and
# keep the first consistent decode ("redecode"; invalid when none is)
INCONSISTENT = ("keep", "invalid", "redecode")
REDECODES, REDECODE_TEMPERATURE = 3, 0.5


@dataclass
class Batch:
    """One evaluated batch: the proposed points, what they decoded to, and the scores."""

    z: torch.Tensor  # (B, Z) proposed
    smiles: list[str | None]
    scores: np.ndarray  # (B,) NaN: invalid, infeasible, failed, or over budget
    new: int  # oracle calls this batch made
    novel: int  # distinct molecules never decoded before (feasible or not)


class Search:
    """The state a method works with: model, oracle, seeded randomness, what has been seen.

    ``seen`` maps every decoded molecule to its index in ``z_mol``/``scores`` (the posterior
    mean of the molecule and its score; NaN where it was infeasible or failed).
    """

    def __init__(self, model: Model, oracle: Oracle, seed: int | None, *,
                 max_stall: int = 25, max_decodes: int | None = None,
                 on_batch: Callable[[Search], None] | None = None, inconsistent: str = "keep"):
        if inconsistent not in INCONSISTENT:
            raise ValueError(f"inconsistent must be one of {', '.join(INCONSISTENT)}, got "
                             f"{inconsistent!r}")
        self.inconsistent = inconsistent
        self.model = model
        self.oracle = oracle
        self.z_dim = model.config.latent_dim
        seed = int(np.random.SeedSequence(seed).entropy % 2**63) if seed is None else int(seed)
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.max_stall = max_stall
        # a search that keeps finding only what it has seen (or what the constraints reject)
        # must end: at most this many decodes
        self.max_decodes = (100 * oracle.budget + 10_000) if max_decodes is None else max_decodes
        self.decoded_set: set[str] = set()
        self.reencode = True  # learn from the decoded molecules' posterior means
        self.stall = 0
        self.decoded = 0
        self.on_batch = on_batch
        self.seen: dict[str, int] = {}
        self._z: list[torch.Tensor] = []
        self._scores: list[float] = []
        self._z_stacked = torch.empty(0, self.z_dim)  # _z as one tensor, rebuilt on growth

    # ---------------------------------------------------------------------------- state
    @property
    def done(self) -> bool:
        """The budget is spent, too many batches in a row found nothing new, or the decode
        cap is reached."""
        return (self.oracle.exhausted or self.stall >= self.max_stall
                or self.decoded >= self.max_decodes)

    @property
    def z_mol(self) -> torch.Tensor:
        """(N, Z) posterior means of every distinct molecule seen, in order seen."""
        if len(self._z_stacked) != len(self._z):  # methods read it every round: stack once
            self._z_stacked = torch.stack(self._z)
        return self._z_stacked

    @property
    def scores(self) -> np.ndarray:
        return np.asarray(self._scores, float)

    def observed(self) -> tuple[torch.Tensor, np.ndarray]:
        """(X, y) of the molecules with a finite score."""
        y = self.scores
        keep = np.isfinite(y)
        return self.z_mol[torch.as_tensor(keep)], y[keep]

    def top(self, k: int) -> tuple[torch.Tensor, np.ndarray]:
        """Latents and scores of the k best molecules seen (finite scores only)."""
        x, y = self.observed()
        order = np.argsort(-y, kind="stable")[:k]
        return x[torch.as_tensor(order, dtype=torch.long)], y[order]

    def _remember(self, smiles: str, z: torch.Tensor) -> None:
        """Record a molecule the oracle has answered for (scored or infeasible) at z; one the
        budget left unscored, or whose latent is NaN (the encoder cannot read it), is not."""
        if smiles in self.seen or bool(torch.isnan(z).any()):
            return
        if smiles not in self.oracle.cache and smiles not in self.oracle.infeasible:
            return
        self.seen[smiles] = len(self._z)
        self._z.append(z)
        self._scores.append(self.oracle.cache.get(smiles, math.nan))

    # ---------------------------------------------------------------------------- work
    def sample_prior(self, n: int) -> torch.Tensor:
        return sample_latent(self.model, n, self.gen).cpu()

    def evaluate(self, z: torch.Tensor, predicted: np.ndarray | None = None,
                 temperature: float = 0.0) -> Batch:
        """Decode z (B, Z) (greedy, or sampled at ``temperature``), score the molecules and
        re-encode the new ones."""
        z = torch.as_tensor(z, dtype=torch.float32).cpu()
        smiles, flags = self._decode(z, temperature)
        before = self.oracle.calls
        scores = self.oracle(smiles, predicted, flags)
        new = self.oracle.calls - before
        novel = len({s for s in smiles if s} - self.decoded_set)
        self.decoded_set.update(s for s in smiles if s)
        fresh = list(dict.fromkeys(s for s in smiles if s and s not in self.seen))
        if fresh:
            if self.reencode:
                mu = encode(self.model, fresh, errors="nan")
            else:  # the ablation: the first point proposed for each molecule
                first = {}
                for zi, s in zip(z, smiles):
                    first.setdefault(s, zi)
                mu = torch.stack([first[s] for s in fresh])
            for s, m in zip(fresh, mu):
                self._remember(s, m)
        self.stall = 0 if new else self.stall + 1
        batch = Batch(z, smiles, scores, new, novel)
        if self.on_batch is not None:
            self.on_batch(self)
        return batch

    def _decode(self, z: torch.Tensor, temperature: float
                ) -> tuple[list[str | None], list[bool]]:
        """Decode z with consistency flags, applying the ``inconsistent`` policy. With "keep"
        only the rows that can become new oracle calls are checked (the check costs about a
        third of an optimizer's run when every row is): the other rows' flags are False and
        unused, since the oracle records flags only for molecules it calls."""
        if not len(z):
            return [], []
        seed = int(torch.randint(2**62, (1,), generator=self.gen)) if temperature > 0 else None
        selfies, smiles = decode_strings(self.model, z, temperature, seed)
        self.decoded += len(z)
        if self.inconsistent == "keep":
            cache, infeasible = self.oracle.cache, self.oracle.infeasible
            rows = [i for i, s in enumerate(smiles)
                    if s and s not in cache and s not in infeasible]
        else:
            rows = list(range(len(z)))
        flags = [False] * len(z)
        checked = consistency(self.model, [selfies[i] for i in rows], [smiles[i] for i in rows])
        for i, ok in zip(rows, checked):
            flags[i] = ok
        if self.inconsistent == "redecode":
            for _ in range(REDECODES):
                redo = [i for i, ok in enumerate(flags) if not ok]
                if not redo:
                    break
                seed = int(torch.randint(2**62, (1,), generator=self.gen))
                again, ok2 = decode(self.model, z[torch.as_tensor(redo)],
                                    temperature=REDECODE_TEMPERATURE, seed=seed,
                                    with_consistency=True)
                self.decoded += len(redo)
                for i, s, ok in zip(redo, again, ok2):
                    if ok:
                        smiles[i], flags[i] = s, True
        if self.inconsistent != "keep":
            smiles = [s if ok else None for s, ok in zip(smiles, flags)]
        return smiles, flags

    def evaluate_molecules(self, smiles: list[str]) -> None:
        """Score given molecules (a start population) and add their posterior means."""
        prep = prepare_inputs(self.model, smiles)  # standardized once, for oracle and encoder
        good = [i for i, r in enumerate(prep.ids) if r is not None]
        mu, _ = posterior(self.model, [prep.ids[i] for i in good])
        canon = [prep.smiles[i] for i in good]
        self.oracle(canon)
        for c, m in zip(canon, mu):
            self._remember(c, m)
        if self.on_batch is not None:
            self.on_batch(self)


# ------------------------------------------------------------------------------- methods
def evolution(search: Search, *, population: int = 100, sigma: float = 0.3,
              parents_frac: float = 0.1, new_target: float = 0.3, adapt: float = 1.2,
              sigma_min: float = 0.02, sigma_max: float = 2.0, crossover: float = 0.0,
              temperature: float = 0.7, sampled_frac: float = 0.5) -> None:
    """Latent evolution: keep the best molecules' latents, vary them, decode, score.

    Each round makes ``population`` children of parents drawn from the best ``parents_frac``
    of the molecules seen. A ``sampled_frac`` share of them keeps the parent's latent point
    and samples the decoder at ``temperature`` (the decoder's own idea of a neighbour); the
    rest move to parent + sigma * N(0, I) (optionally after uniform crossover with a second
    parent) and decode greedily. The step adapts to how often a child decodes to a molecule
    not seen before: below ``new_target`` it grows by ``adapt``, above it shrinks -- small
    steps find the better neighbours, but a step so small that every child decodes to its
    parent wastes decodes. (Defaults: chosen on the benchmark in
    scripts/benchmark_optimize.py at 2,000 calls, 2 seeds, over the sum of its tasks.)
    """
    if not len(search.observed()[1]):
        search.evaluate(search.sample_prior(population))
    while not search.done:
        parents, _ = search.top(max(1, int(population * parents_frac)))
        if not len(parents):
            search.evaluate(search.sample_prior(population))
            continue
        pick = torch.randint(len(parents), (population,), generator=search.gen)
        child = parents[pick].clone()
        if crossover > 0 and len(parents) > 1:
            other = parents[torch.randint(len(parents), (population,), generator=search.gen)]
            mix = torch.rand(child.shape, generator=search.gen) < 0.5
            cross = torch.rand((population, 1), generator=search.gen) < crossover
            child = torch.where(mix & cross, other, child)
        child = child + sigma * torch.randn(child.shape, generator=search.gen)
        n_sampled = int(round(sampled_frac * population)) if temperature > 0 else 0
        novel = 0  # counted over every decoded molecule, infeasible ones too
        if n_sampled:  # these children keep their parent's point and sample the decoder
            novel += search.evaluate(parents[pick[:n_sampled]], temperature=temperature).novel
        if n_sampled < population and not search.done:
            novel += search.evaluate(child[n_sampled:]).novel
        grow = novel / population < new_target
        sigma = min(sigma_max, max(sigma_min, sigma * adapt if grow else sigma / adapt))


@contextlib.contextmanager
def _numpy_global_state_kept() -> Iterator[None]:
    """cma draws from numpy's global RNG in a few places; leave the caller's state as it was."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def cmaes(search: Search, *, population: int = 50, sigma0: float = 1.0,
          init: int = 100) -> None:
    """CMA-ES (the ``cma`` package) over the latent space, restarted from the best molecule
    seen whenever it converges. Fitness is the negated score; a point whose molecule has no
    score (invalid, infeasible, failed) gets the worst fitness of its generation plus one.

    ``sigma0`` is the initial step per latent dimension, on the scale of the prior (N(0, I)).
    1.0 lets the search leave the training molecules' region where the objective rewards it
    and CMA-ES shrinks the step where precision pays: against 0.5 (the previous default) it
    raised the mean top-1 penalized logP from 6.13 to 9.11 and left the PMO tasks' AUC sum
    where it was (2.554 against 2.563; scripts/benchmark_optimize.py, 3 seeds, the README's
    benchmark; the 0.5 runs are in molvae/pretrained/optimize_cmaes_sigma05.jsonl).
    """
    import cma

    rng = search.rng

    def randn(n: int, d: int) -> np.ndarray:  # cma's own stream, from the run's seed
        return rng.standard_normal((n, d))

    if not len(search.observed()[1]):
        search.evaluate(search.sample_prior(init))
    with _numpy_global_state_kept():
        while not search.done:
            best, _ = search.top(1)
            x0 = (best[0] if len(best) else search.sample_prior(1)[0]).double().numpy()
            es = cma.CMAEvolutionStrategy(x0, sigma0, {
                "popsize": population, "randn": randn, "seed": math.nan, "verbose": -9,
                "CMA_diagonal": False, "maxiter": 10_000})
            while not search.done and not es.stop():
                xs = es.ask()
                batch = search.evaluate(torch.as_tensor(np.asarray(xs), dtype=torch.float32))
                f = -batch.scores
                worst = np.nanmax(f) if np.isfinite(f).any() else 0.0
                es.tell(xs, np.where(np.isfinite(f), f, worst + 1.0).tolist())
