"""Molecule scoring: the registered objectives, similarity, and ``score``.

Every value is recomputed by RDKit from the molecule itself. ``score`` keeps input order and
length: an item that is not a molecule, or on which the objective raised or gave no finite value,
scores NaN with a status saying which, and the batch goes on (DESIGN.md section 7).

    from molvae.properties import score
    score(["CCO", "c1ccccc1", "xyz"], "qed")           # -> array([0.407, 0.443, nan])
    values, statuses = score(smiles, ["qed", "sa", "similarity:CCO"], return_status=True)

An objective is an :class:`Objective`, a registered name (:data:`OBJECTIVES`, any case),
``"similarity:SMILES"``, or any callable ``f(list[str]) -> Sequence[float]`` over canonical
SMILES. :mod:`molvae.mpo` combines objectives into multi-property scores.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np
from rdkit import Chem, DataStructs, RDConfig, rdBase
from rdkit.Chem import Crippen, Descriptors, rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.QED import qed as _rdkit_qed

from . import chem
from .parallel import pmap

__all__ = [
    "Objective",
    "ObjectiveError",
    "Infeasible",
    "OBJECTIVES",
    "get_objective",
    "score",
    "similarity",
    "score_all",
    "Scored",
]

log = logging.getLogger(__name__)

OK, NAN, INFEASIBLE, ERROR = "ok", "nan", "infeasible", "error"

# ZINC-250k statistics of the three plogp terms, as hard-coded in GCPN's reward_penalized_log_p
# (gym-molecule, "statistics from 250k_rndm_zinc_drugs_clean.smi") and computed the same way by
# JT-VAE's bo/ scripts (np.mean/np.std of logP_values.txt, SA_scores.txt, cycle_scores.txt).
# SA and cycle enter negated, so their means are negative.
LOGP_MEAN, LOGP_STD = 2.4570953396190123, 1.434324401111988
SA_MEAN, SA_STD = -3.0525811293166134, 0.8335207024513095
CYCLE_MEAN, CYCLE_STD = -0.0485696876403053, 0.2860212110245455


class ObjectiveError(ValueError):
    """An objective spec or argument is wrong, or an objective broke its contract."""


class Infeasible(Exception):
    """Raised by a per-molecule function: the molecule violates a constraint (status
    ``infeasible``, value NaN)."""


@dataclass(frozen=True)
class Objective:
    """A named score of one molecule, in exactly one of three forms.

    Attributes:
        name: the key of this objective in results and the CLI's column name.
        mol: ``f(Chem.Mol) -> float``, run per molecule, on worker processes for large inputs,
            so it must pickle: a module-level function or a ``functools.partial`` of one.
        batch: ``f(list[str]) -> Sequence[float]`` over unique canonical SMILES, run in this
            process (user callables, models that score in batches).
        parts, combine: a composite holding a batch objective: ``combine(*part_values)`` per
            molecule. Composites of per-molecule parts are themselves per-molecule, so each
            molecule is parsed once.
    """

    name: str
    mol: Callable[[Chem.Mol], Any] | None = None
    batch: Callable[[list[str]], Sequence[Any]] | None = None
    parts: tuple[Objective, ...] = ()
    combine: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ObjectiveError(f"an objective needs a non-empty name, got {self.name!r}")
        forms = sum(f is not None for f in (self.mol, self.batch, self.combine))
        if forms != 1 or bool(self.parts) != (self.combine is not None):
            raise ObjectiveError(f"objective {self.name!r}: give exactly one of mol=, batch= "
                                 "or parts= with combine=")

    @property
    def per_molecule(self) -> bool:
        return self.mol is not None

    def __call__(self, smiles: Sequence[Any], *, jobs: int | None = None,
                 progress: bool = False) -> np.ndarray:
        """Scores a list of SMILES/Mols; same as ``score(smiles, self)``."""
        return score(smiles, self, jobs=jobs, progress=progress)


ObjectiveSpec = Objective | str | Callable[[list[str]], Sequence[float]]


# ------------------------------------------------------------------------------ per molecule
@lru_cache(maxsize=1)
def _sascorer() -> ModuleType:
    """Loads RDKit Contrib's sascorer.py from its file, leaving sys.path alone."""
    path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
    if not path.is_file():
        raise ImportError(f"RDKit's SA_Score contrib module is missing: {path}")
    spec = importlib.util.spec_from_file_location("_molvae_sascorer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _safe(func: Callable[[Chem.Mol], float], mol: Chem.Mol) -> float:
    try:
        value = func(mol)
    except Exception:  # a descriptor failing on one odd molecule must not sink the batch
        return math.nan
    return math.nan if value is None else float(value)


# Python wrappers, not the RDKit functions themselves: Boost.Python functions do not pickle, and
# pool tasks carry their function.
def _qed(mol: Chem.Mol) -> float:
    return _rdkit_qed(mol)


def _logp(mol: Chem.Mol) -> float:
    return Crippen.MolLogP(mol)


def _sa(mol: Chem.Mol) -> float:
    return _sascorer().calculateScore(mol)


def _ring_penalty(mol: Chem.Mol) -> int:
    # RDKit's SSSR rings. JT-VAE/GCPN took networkx.cycle_basis of the adjacency graph, which can
    # return a cycle around two fused rings (an 11-ring for a naphthalimide); the two differ on
    # 129 of the first 20,000 MOSES test molecules.
    largest = max((len(ring) for ring in mol.GetRingInfo().AtomRings()), default=0)
    return max(0, largest - 6)


def _plogp(mol: Chem.Mol) -> float:
    return Crippen.MolLogP(mol) - _sa(mol) - _ring_penalty(mol)


def _plogp_norm(mol: Chem.Mol) -> float:
    return ((Crippen.MolLogP(mol) - LOGP_MEAN) / LOGP_STD
            + (-_sa(mol) - SA_MEAN) / SA_STD
            + (-_ring_penalty(mol) - CYCLE_MEAN) / CYCLE_STD)


def _mw(mol: Chem.Mol) -> float:
    return Descriptors.MolWt(mol)


def _tpsa(mol: Chem.Mol) -> float:
    return rdMolDescriptors.CalcTPSA(mol)


def _hbd(mol: Chem.Mol) -> int:
    return rdMolDescriptors.CalcNumHBD(mol)


def _hba(mol: Chem.Mol) -> int:
    return rdMolDescriptors.CalcNumHBA(mol)


def _rotb(mol: Chem.Mol) -> int:
    return rdMolDescriptors.CalcNumRotatableBonds(mol)


def _heavy_atoms(mol: Chem.Mol) -> int:
    return mol.GetNumHeavyAtoms()


def _rings(mol: Chem.Mol) -> int:
    return rdMolDescriptors.CalcNumRings(mol)


OBJECTIVES: Mapping[str, Objective] = MappingProxyType({
    name: Objective(name, mol=fn) for name, fn in [
        ("qed", _qed), ("logp", _logp), ("sa", _sa), ("plogp", _plogp),
        ("plogp_norm", _plogp_norm), ("mw", _mw), ("tpsa", _tpsa), ("hbd", _hbd),
        ("hba", _hba), ("rotb", _rotb), ("heavy_atoms", _heavy_atoms), ("rings", _rings)]
})


@lru_cache(maxsize=8)
def _morgan(radius: int, n_bits: int) -> Any:
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def _tanimoto(target_fp: Any, radius: int, n_bits: int, mol: Chem.Mol) -> float:
    return DataStructs.TanimotoSimilarity(target_fp, _morgan(radius, n_bits).GetFingerprint(mol))


def similarity(target: str | Chem.Mol, *, radius: int = 2, n_bits: int = 2048,
               name: str | None = None) -> Objective:
    """Tanimoto similarity of Morgan fingerprints (count-free bits) to a target molecule.

    Args:
        target: the target SMILES (or Mol).
        radius, n_bits: the Morgan fingerprint (default ECFP4-like, 2048 bits).
        name: the objective's name (default ``"similarity:<target>"``).
    """
    mol, _, reason = chem.to_mol(target)
    if mol is None:
        raise ObjectiveError(f"similarity target {target!r}: {reason}")
    fp = _morgan(radius, n_bits).GetFingerprint(mol)
    label = target.strip() if isinstance(target, str) else Chem.MolToSmiles(mol)
    return Objective(name or f"similarity:{label}",
                     mol=partial(_tanimoto, fp, radius, n_bits))


def get_objective(spec: ObjectiveSpec) -> Objective:
    """An :class:`Objective` from a name (any case), ``"similarity:SMILES"``, an Objective or a
    callable ``f(list[str]) -> Sequence[float]``; a misspelled name says what it may mean."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        head, colon, target = text.partition(":")
        if colon and head.strip().lower() == "similarity":
            return similarity(target)
        if text.lower() in OBJECTIVES:
            return OBJECTIVES[text.lower()]
        choices = [*OBJECTIVES, "similarity"]
        close = difflib.get_close_matches((head if colon else text).lower(), choices, n=1)
        hint = ""
        if text.lower() == "similarity":
            hint = " (similarity needs a target: 'similarity:SMILES')"
        elif close:
            hint = f" (did you mean {close[0] + (':' + target if colon else '')!r}?)"
        raise ObjectiveError(f"unknown objective {spec!r}{hint}; objectives are "
                             f"{', '.join(OBJECTIVES)} and 'similarity:SMILES'")
    if callable(spec):
        name = getattr(spec, "__name__", None) or type(spec).__name__
        return Objective(name, batch=spec)
    raise ObjectiveError("an objective is a name, 'similarity:SMILES', an Objective or a "
                         f"callable f(list[str]) -> Sequence[float]; got {type(spec).__name__}")


# ------------------------------------------------------------------------------------ scoring
Outcome = tuple[float, str, str]  # (value, status kind, reason)


def _as_float(value: Any) -> float:
    v = math.nan if value is None else float(value)
    return v if math.isfinite(v) else math.nan


def _outcome(fn: Callable[..., Any], *args: Any) -> Outcome:
    try:
        v = _as_float(fn(*args))
    except Infeasible as exc:
        return math.nan, INFEASIBLE, str(exc)
    except Exception as exc:  # one molecule's failure must not sink the batch
        return math.nan, ERROR, f"{type(exc).__name__}: {exc}"
    return (v, OK, "") if not math.isnan(v) else (v, NAN, "no finite value")


def _score_chunk(fns: tuple[Callable, ...], want_smiles: bool,
                 chunk: Sequence[Any]) -> list[tuple[str, str, str | None, tuple[Outcome, ...]]]:
    """Worker: (status, reason, canonical SMILES, one outcome per fn) for each item."""
    out = []
    with rdBase.BlockLogs():
        for item in chunk:
            mol, status, reason = chem.to_mol(item)
            if mol is None:
                out.append((status, reason, None, ()))
                continue
            smiles = Chem.MolToSmiles(mol) if want_smiles else None
            out.append((OK, "", smiles, tuple(_outcome(f, mol) for f in fns)))
    return out


def _batch_values(obj: Objective, smiles: list[str]) -> list[Outcome]:
    values = obj.batch(list(smiles))  # a copy: a callable that edits its argument cannot touch ours
    if isinstance(values, np.ndarray) and values.size == len(smiles):
        values = values.reshape(-1)  # e.g. a model's (N, 1) output
    try:
        values = list(values)
    except TypeError:
        raise ObjectiveError(f"objective {obj.name!r} must return one value per molecule, got "
                             f"{type(values).__name__}") from None
    if len(values) != len(smiles):
        raise ObjectiveError(f"objective {obj.name!r} returned {len(values)} values for "
                             f"{len(smiles)} molecules")
    return [_outcome(_as_float, v) for v in values]


def _run_batch(obj: Objective, smiles: list[str]) -> list[Outcome]:
    if not smiles:
        return []
    try:
        return _batch_values(obj, smiles)
    except ObjectiveError:
        raise
    except Exception as exc:
        # find the molecule(s) it fails on, so that only they go without a score
        log.debug("objective %r raised on a batch (%s); scoring one at a time", obj.name, exc)
    out: list[Outcome] = []
    for s in smiles:
        try:
            out.extend(_batch_values(obj, [s]))
        except ObjectiveError:
            raise
        except Infeasible as exc:
            out.append((math.nan, INFEASIBLE, str(exc)))
        except Exception as exc:
            out.append((math.nan, ERROR, f"{type(exc).__name__}: {exc}"))
    return out


def _leaves(obj: Objective, found: dict[int, Objective]) -> None:
    if obj.parts:
        for part in obj.parts:
            _leaves(part, found)
    else:
        found.setdefault(id(obj), obj)


@dataclass
class Scored:
    """Outcomes per objective name, aligned with the input: values, status kinds (ok, invalid,
    unsupported, nan, infeasible, error) and reasons."""

    values: dict[str, np.ndarray]
    kinds: dict[str, list[str]]
    reasons: dict[str, list[str]]

    def statuses(self, name: str) -> list[str]:
        return [f"{ERROR}: {r}" if k == ERROR else k
                for k, r in zip(self.kinds[name], self.reasons[name])]


def score_all(items: Sequence[Any], objectives: Sequence[Objective], *, jobs: int | None = None,
              progress: bool = False) -> Scored:
    """Every objective of every item, with reasons; :func:`score` is the public face."""
    uniq: list[Any] = []
    where: list[int] = []
    seen: dict[str, int] = {}
    for x in items:  # repeated strings are scored once; Mols and None by position
        j = seen.setdefault(x, len(uniq)) if isinstance(x, str) else len(uniq)
        if j == len(uniq):
            uniq.append(x)
        where.append(j)
    leaves: dict[int, Objective] = {}
    for obj in objectives:
        _leaves(obj, leaves)
    mol_leaves = [o for o in leaves.values() if o.per_molecule]
    batch_leaves = [o for o in leaves.values() if not o.per_molecule]
    rows = pmap(partial(_score_chunk, tuple(o.mol for o in mol_leaves), bool(batch_leaves)),
                uniq, jobs=jobs, progress=progress, desc="scoring")
    got: dict[int, list[Outcome]] = {}
    for k, o in enumerate(mol_leaves):
        got[id(o)] = [r[3][k] if r[0] == OK else (math.nan, r[0], r[1]) for r in rows]
    canon = list(dict.fromkeys(r[2] for r in rows if r[0] == OK))
    for o in batch_leaves:
        by_smiles = dict(zip(canon, _run_batch(o, canon)))
        got[id(o)] = [by_smiles[r[2]] if r[0] == OK else (math.nan, r[0], r[1]) for r in rows]

    def resolve(obj: Objective) -> list[Outcome]:
        if id(obj) not in got:
            parts = [resolve(p) for p in obj.parts]
            # a part without a value leaves the composite without one, with the part's reason
            got[id(obj)] = [next((p for p in ps if p[1] != OK), None)
                            or _outcome(obj.combine, *(p[0] for p in ps)) for ps in zip(*parts)]
        return got[id(obj)]

    out = Scored({}, {}, {})
    for obj in objectives:
        res = resolve(obj)
        out.values[obj.name] = np.array([res[j][0] for j in where], dtype=np.float64)
        out.kinds[obj.name] = [res[j][1] for j in where]
        out.reasons[obj.name] = [res[j][2] for j in where]
    return out


def score(smiles: Sequence[Any], objective: ObjectiveSpec | Sequence[ObjectiveSpec], *,
          jobs: int | None = None, progress: bool = False, return_status: bool = False) -> Any:
    """Scores molecules, aligned with the input.

    Args:
        smiles: SMILES strings, RDKit Mols or None. Molecules are scored as given (all
            fragments); ``molvae.chem.prepare`` standardizes them first if wanted.
        objective: a spec (see :func:`get_objective`) or a list of specs.
        jobs: worker processes for per-molecule objectives on large inputs (``None`` = every
            core); batch callables run in this process on unique canonical SMILES.
        progress: a progress bar on stderr.
        return_status: also return per-item statuses: ``ok``, ``invalid`` (not a molecule),
            ``unsupported`` (wildcard atoms), ``nan`` (no finite value), ``infeasible`` (a
            constraint such as :func:`heavy_atom_cap`), ``error: <Type: message>``.

    Returns:
        A float64 array with NaN where there is no score; for a list of specs a dict name ->
        array; with ``return_status`` a tuple (values, statuses) of those shapes.

    Raises:
        ObjectiveError: an unknown name (with a suggestion), duplicate names, or a batch
            callable that returned the wrong number of values.
    """
    if isinstance(smiles, (str, Chem.Mol)):
        raise TypeError("score() takes a list of molecules; for one, pass [smiles]")
    single = isinstance(objective, (str, Objective)) or callable(objective)
    objs = [get_objective(objective)] if single else [get_objective(o) for o in objective]
    names = [o.name for o in objs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ObjectiveError(f"objective names must be unique; repeated: {', '.join(dupes)} "
                             "(give composites a name=)")
    res = score_all(list(smiles), objs, jobs=jobs, progress=progress)
    if single:
        values, statuses = res.values[names[0]], res.statuses(names[0])
    else:
        values, statuses = res.values, {n: res.statuses(n) for n in names}
    return (values, statuses) if return_status else values
