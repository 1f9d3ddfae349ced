"""MPO pieces: the modifiers and means that GuacaMol-style multi-property objectives are built
from, over any objective of :mod:`molvae.properties`.

    from molvae.mpo import gaussian, geometric_mean, heavy_atom_cap
    mpo = geometric_mean([similarity("CC(=O)Oc1ccccc1C(=O)O"), gaussian("logp", 2.0, 1.0)])
    score(smiles, heavy_atom_cap(mpo, 40))

Modifiers map a value x to a score, mostly in [0, 1]; each returns a new :class:`Objective`
named after its parts (``name=`` overrides). Composites of per-molecule objectives stay
per-molecule: each molecule is parsed once, and they run on the process pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from rdkit import Chem

from .properties import (
    OBJECTIVES,
    Infeasible,
    Objective,
    ObjectiveError,
    ObjectiveSpec,
    _as_float,
    get_objective,
)

__all__ = [
    "gaussian",
    "min_gaussian",
    "max_gaussian",
    "threshold",
    "clipped",
    "window",
    "heavy_atom_cap",
    "mean",
    "weighted_mean",
    "geometric_mean",
]


def _combined(combine: Callable[..., Any], fns: tuple[Callable, ...], mol: Chem.Mol) -> Any:
    values = [_as_float(f(mol)) for f in fns]
    # a part without a value leaves the whole without one (as score_all does for batch parts)
    return math.nan if any(math.isnan(v) for v in values) else combine(*values)


def _compose(name: str, combine: Callable[..., Any], parts: Sequence[ObjectiveSpec]) -> Objective:
    objs = [get_objective(p) for p in parts]
    if all(o.per_molecule for o in objs):
        return Objective(name, mol=partial(_combined, combine, tuple(o.mol for o in objs)))
    return Objective(name, parts=tuple(objs), combine=combine)


def _positive(what: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ObjectiveError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _gaussian(mu: float, sigma: float, x: float) -> float:
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2)


def _min_gaussian(mu: float, sigma: float, x: float) -> float:
    return 1.0 if x <= mu else _gaussian(mu, sigma, x)


def _max_gaussian(mu: float, sigma: float, x: float) -> float:
    return 1.0 if x >= mu else _gaussian(mu, sigma, x)


def _threshold(value: float, x: float) -> float:
    return min(x, value) / value


def _clipped(lower: float, upper: float, x: float) -> float:
    return min(1.0, max(0.0, (x - lower) / (upper - lower)))


def _window(low: float, high: float, x: float) -> float:
    return 1.0 if low <= x <= high else 0.0


def _capped(cap: int, fn: Callable[[Chem.Mol], Any], mol: Chem.Mol) -> Any:
    n = mol.GetNumHeavyAtoms()
    if n > cap:  # checked first, so an expensive objective is not computed for nothing
        raise Infeasible(f"{n} heavy atoms > cap {cap}")
    return fn(mol)


def _cap(cap: int, n: float, x: float) -> float:
    if n > cap:
        raise Infeasible(f"{int(n)} heavy atoms > cap {cap}")
    return x


def _weighted_mean(weights: tuple[float, ...], *xs: float) -> float:
    return sum(w * x for w, x in zip(weights, xs)) / sum(weights)


def _geometric_mean(weights: tuple[float, ...], *xs: float) -> float:
    if any(x < 0 for x in xs):
        raise ValueError(f"geometric mean of a negative score ({min(xs):g})")
    return math.prod(x ** w for w, x in zip(weights, xs)) ** (1.0 / sum(weights))


def gaussian(objective: ObjectiveSpec, mu: float, sigma: float, *,
             name: str | None = None) -> Objective:
    """``exp(-0.5 * ((x - mu) / sigma) ** 2)``: 1 at ``mu`` (GuacaMol GaussianModifier)."""
    obj, sigma = get_objective(objective), _positive("sigma", sigma)
    return _compose(name or f"gaussian({obj.name},{mu:g},{sigma:g})",
                    partial(_gaussian, float(mu), sigma), [obj])


def min_gaussian(objective: ObjectiveSpec, mu: float, sigma: float, *,
                 name: str | None = None) -> Objective:
    """1 for ``x <= mu``, the Gaussian above it: lower is better (GuacaMol MinGaussianModifier)."""
    obj, sigma = get_objective(objective), _positive("sigma", sigma)
    return _compose(name or f"min_gaussian({obj.name},{mu:g},{sigma:g})",
                    partial(_min_gaussian, float(mu), sigma), [obj])


def max_gaussian(objective: ObjectiveSpec, mu: float, sigma: float, *,
                 name: str | None = None) -> Objective:
    """1 for ``x >= mu``, the Gaussian below it: higher is better (GuacaMol MaxGaussianModifier)."""
    obj, sigma = get_objective(objective), _positive("sigma", sigma)
    return _compose(name or f"max_gaussian({obj.name},{mu:g},{sigma:g})",
                    partial(_max_gaussian, float(mu), sigma), [obj])


def threshold(objective: ObjectiveSpec, value: float, *, name: str | None = None) -> Objective:
    """``min(x, value) / value``: a linear ramp through 0 that reaches 1 at ``value`` and stays
    there (GuacaMol ThresholdedLinearModifier). Not clipped below: ``x < 0`` scores below 0."""
    obj, value = get_objective(objective), _positive("threshold value", value)
    return _compose(name or f"threshold({obj.name},{value:g})", partial(_threshold, value), [obj])


def clipped(objective: ObjectiveSpec, lower: float, upper: float, *,
            name: str | None = None) -> Objective:
    """``clip((x - lower) / (upper - lower), 0, 1)``: 0 at ``lower``, 1 at ``upper``, linear in
    between (GuacaMol ClippedScoreModifier(upper_x=upper, lower_x=lower)); ``lower > upper``
    makes it decreasing."""
    obj = get_objective(objective)
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower == upper:
        raise ObjectiveError(f"clipped: lower and upper must be different numbers, got "
                             f"{lower!r} and {upper!r}")
    return _compose(name or f"clipped({obj.name},{lower:g},{upper:g})",
                    partial(_clipped, float(lower), float(upper)), [obj])


def window(objective: ObjectiveSpec, low: float, high: float, *,
           name: str | None = None) -> Objective:
    """1 when ``low <= x <= high``, else 0: a property window, usable as a 0/1 constraint."""
    obj = get_objective(objective)
    if not low <= high:
        raise ObjectiveError(f"window: low must be <= high, got {low!r} and {high!r}")
    return _compose(name or f"window({obj.name},{low:g},{high:g})",
                    partial(_window, float(low), float(high)), [obj])


def heavy_atom_cap(objective: ObjectiveSpec, max_heavy_atoms: int, *,
                   name: str | None = None) -> Objective:
    """The objective's value for molecules with at most ``max_heavy_atoms`` heavy atoms; larger
    molecules are infeasible: NaN with status ``infeasible`` (never a best score). Use the
    ``heavy_atoms`` objective to test the cap yourself."""
    obj = get_objective(objective)
    if isinstance(max_heavy_atoms, bool) or not isinstance(max_heavy_atoms, int) \
            or max_heavy_atoms < 1:
        raise ObjectiveError(f"max_heavy_atoms must be an integer >= 1, got {max_heavy_atoms!r}")
    name = name or f"{obj.name}[heavy_atoms<={max_heavy_atoms}]"
    if obj.per_molecule:
        return Objective(name, mol=partial(_capped, max_heavy_atoms, obj.mol))
    return Objective(name, parts=(OBJECTIVES["heavy_atoms"], obj),
                     combine=partial(_cap, max_heavy_atoms))


def _weights(n: int, weights: Sequence[float] | None) -> tuple[float, ...]:
    if n == 0:
        raise ObjectiveError("a mean needs at least one objective")
    w = tuple(float(x) for x in weights) if weights is not None else (1.0,) * n
    if len(w) != n or not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ObjectiveError(f"weights must be {n} numbers >= 0 with a positive sum, got "
                             f"{list(weights or [])}")
    return w


def weighted_mean(objectives: Sequence[ObjectiveSpec], weights: Sequence[float] | None = None,
                  *, name: str | None = None) -> Objective:
    """``sum(w_i * x_i) / sum(w_i)`` (GuacaMol ArithmeticMeanScoringFunction)."""
    objs = [get_objective(o) for o in objectives]
    w = _weights(len(objs), weights)
    return _compose(name or f"mean({','.join(o.name for o in objs)})",
                    partial(_weighted_mean, w), objs)


def mean(objectives: Sequence[ObjectiveSpec], *, name: str | None = None) -> Objective:
    """The arithmetic mean of the objectives' values."""
    return weighted_mean(objectives, None, name=name)


def geometric_mean(objectives: Sequence[ObjectiveSpec], weights: Sequence[float] | None = None,
                   *, name: str | None = None) -> Objective:
    """``prod(x_i ** w_i) ** (1 / sum(w_i))`` of scores in [0, 1]; unweighted, GuacaMol's
    GeometricMeanScoringFunction. One zero makes it zero; a negative score is an error for that
    molecule."""
    objs = [get_objective(o) for o in objectives]
    w = _weights(len(objs), weights)
    return _compose(name or f"geometric_mean({','.join(o.name for o in objs)})",
                    partial(_geometric_mean, w), objs)
