"""Internals of molvae.metrics: per-molecule features (mapped over molvae.parallel's process
pool), the Tanimoto kernel, the on-disk caches of reference statistics and the fcd_torch plumbing.

Split out of metrics.py so that module reads as the list of MOSES metrics; nothing here is public
API. Cache keys (``_key``) must stay stable: a change re-computes every cached reference set
(about 20 minutes per MOSES test set on two CPU cores), so bump ``_CACHE_VERSION`` only when a
definition changes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import rdkit
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold
from scipy.stats import wasserstein_distance
from tqdm import tqdm

from . import parallel
from .filters import _passes, _to_mol
from .properties import OBJECTIVES, _safe

FP_RADIUS, FP_BITS = 2, 1024  # MOSES: Morgan, radius 2, 1024 bits
SCAFFOLD_MIN_RINGS = 2  # MOSES compute_scaffolds(min_rings=2): smaller scaffolds are not counted
PROPERTY_NAMES = ("logP", "SA", "QED", "weight")
# the per-molecule functions of molvae.properties behind PROPERTY_NAMES, in that order
_PROPERTY_FNS = tuple(OBJECTIVES[k].mol for k in ("logp", "sa", "qed", "mw"))

# Bump when a definition changes: it is part of every cache key.
_CACHE_VERSION = "molvae-metrics-1"
_ROWS, _COLS = 2048, 8192  # Tanimoto block: (2048, 8192) float32 = 64 MiB

# What _featurize_chunk computes for each molecule; a bit mask keeps pickled tasks tiny.
_FP, _FRAG, _SCAF, _PROPS, _FILTERS = 1, 2, 4, 8, 16
_REF = _FP | _FRAG | _SCAF | _PROPS
_ALL = _REF | _FILTERS

Stats = dict[str, np.ndarray]


# --------------------------------------------------------------------------- per molecule


@lru_cache(maxsize=1)
def _morgan() -> Any:
    return rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)


def _scaffold(mol: Chem.Mol) -> str | None:
    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = Chem.MolToSmiles(scaffold)
    if not smiles or scaffold.GetRingInfo().NumRings() < SCAFFOLD_MIN_RINGS:
        return None
    return smiles


def _featurize_chunk(chunk: Sequence[object], flags: int) -> list[tuple | None]:
    """Worker: one tuple per input, None where invalid.

    Tuple: (canonical SMILES, packed fingerprint, BRICS fragments, scaffold, properties, passes).
    """
    out: list[tuple | None] = []
    with rdBase.BlockLogs():
        for item in chunk:
            mol = _to_mol(item)
            if mol is None:
                out.append(None)
                continue
            out.append(
                (
                    Chem.MolToSmiles(mol),
                    np.packbits(_morgan().GetFingerprintAsNumPy(mol)) if flags & _FP else None,
                    Chem.MolToSmiles(Chem.FragmentOnBRICSBonds(mol)).split(".")
                    if flags & _FRAG
                    else None,
                    _scaffold(mol) if flags & _SCAF else None,
                    tuple(_safe(f, mol) for f in _PROPERTY_FNS)
                    if flags & _PROPS
                    else None,
                    _passes(mol) if flags & _FILTERS else None,
                )
            )
    return out


def _canonical_chunk(chunk: Sequence[object]) -> list[str | None]:
    with rdBase.BlockLogs():
        return [None if (m := _to_mol(s)) is None else Chem.MolToSmiles(m) for s in chunk]


# --------------------------------------------------------------------------- plumbing


def _featurize(
    smiles: Sequence[object], flags: int, n_jobs: int | None, progress: bool, desc: str
) -> list[tuple | None]:
    """_featurize_chunk over a whole list, computing each distinct string once."""
    index: dict[object, int] = {}
    keys = [index.setdefault(s if isinstance(s, str) else None, len(index)) for s in smiles]
    unique = list(index)
    done = parallel.pmap(partial(_featurize_chunk, flags=flags), unique, jobs=n_jobs,
                         progress=progress, desc=desc)
    return [done[k] for k in keys]


def _aggregate(results: Iterable[tuple | None], flags: int) -> Stats:
    """Turns per-molecule tuples (invalid ones skipped) into arrays and count tables."""
    valid = [r for r in results if r is not None]
    stats: Stats = {}
    if flags & _FP:
        fps = [r[1] for r in valid]
        stats["fps"] = np.stack(fps) if fps else np.zeros((0, FP_BITS // 8), np.uint8)
    for flag, name, column in ((_FRAG, "frag", 2), (_SCAF, "scaf", 3)):
        if flags & flag:
            counts: Counter[str] = Counter()
            for r in valid:
                if flag == _FRAG:
                    counts.update(r[column])
                elif r[column] is not None:
                    counts[r[column]] += 1
            stats[f"{name}_keys"] = np.array(sorted(counts), dtype=str)
            stats[f"{name}_counts"] = np.array([counts[k] for k in stats[f"{name}_keys"]], np.int64)
    if flags & _PROPS:
        props = np.array([r[4] for r in valid], np.float64).reshape(-1, len(PROPERTY_NAMES))
        for i, name in enumerate(PROPERTY_NAMES):
            stats[name] = props[:, i]
    if flags & _FILTERS:
        stats["passes"] = np.array([r[5] for r in valid], bool)
    return stats


def _counts(stats: Stats, name: str) -> dict[str, int]:
    keys, counts = stats[f"{name}_keys"].tolist(), stats[f"{name}_counts"].tolist()
    return dict(zip(keys, counts, strict=True))


def _cosine(ref: dict[str, int], gen: dict[str, int]) -> float:
    """Cosine similarity of two count tables; NaN when either is empty (as MOSES)."""
    if not ref or not gen:
        return math.nan
    dot = sum(count * ref.get(key, 0) for key, count in gen.items())
    norm = math.sqrt(sum(c * c for c in ref.values())) * math.sqrt(sum(c * c for c in gen.values()))
    return dot / norm


def _tanimoto(
    query: np.ndarray, ref: np.ndarray, *, moments: bool, device: str, progress: bool, desc: str
) -> np.ndarray:
    """Reduces the Tanimoto matrix of packed fingerprints block by block.

    Args:
        query: (n, 128) uint8 packed fingerprints.
        ref: (m, 128) uint8 packed fingerprints.
        moments: False -> max over ref per query row, shape (n,); True -> per-row sums of T and
            T**2, shape (n, 2). 0/0 (two empty fingerprints) counts as 1, as in MOSES.
        device: torch device for the matrix products.
        progress: show a progress bar on stderr.
        desc: its label.

    Returns:
        float64 array as described for `moments`.
    """
    import torch

    def unpack(packed: np.ndarray) -> torch.Tensor:
        bits = np.unpackbits(packed, axis=1)  # (k, 1024) of 0/1
        return torch.from_numpy(bits).to(device=device, dtype=torch.float32)

    q = unpack(query)  # (n, 1024)
    q_count = q.sum(1)
    out = torch.zeros((len(q), 2) if moments else len(q), dtype=torch.float64, device=device)
    with (
        torch.no_grad(),
        tqdm(total=len(ref), desc=desc, unit="mol", disable=not progress, file=sys.stderr) as bar,
    ):
        for j in range(0, len(ref), _COLS):
            r = unpack(ref[j : j + _COLS])  # (c, 1024)
            r_count = r.sum(1)
            has_empty = bool((r_count == 0).any() or (q_count == 0).any())
            for i in range(0, len(q), _ROWS):
                inter = q[i : i + _ROWS] @ r.T  # (b, c): exact small integers in float32
                union = q_count[i : i + _ROWS, None] + r_count[None, :] - inter
                t = inter.div_(union)
                if has_empty:
                    t = t.nan_to_num_(nan=1.0)
                if moments:
                    out[i : i + _ROWS, 0] += t.sum(1, dtype=torch.float64)
                    out[i : i + _ROWS, 1] += (t * t).sum(1, dtype=torch.float64)
                else:
                    out[i : i + _ROWS] = torch.maximum(out[i : i + _ROWS], t.max(1).values)
            bar.update(len(r))
    return out.cpu().numpy()


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    view = np.ascontiguousarray(a).view(np.dtype((np.void, a.shape[1])))
    _, first, inverse = np.unique(view.ravel(), return_index=True, return_inverse=True)
    return a[first], inverse.ravel()


def _snn(gen: Stats, ref: Stats, device: str, progress: bool, desc: str = "SNN") -> float:
    if len(gen["fps"]) == 0 or len(ref["fps"]) == 0:
        return math.nan
    query, inverse = _unique_rows(gen["fps"])
    best = _tanimoto(
        query,
        _unique_rows(ref["fps"])[0],
        moments=False,
        device=device,
        progress=progress,
        desc=desc,
    )
    return float(best[inverse].mean())


def _int_divs(gen: Stats, device: str, progress: bool) -> tuple[float, float]:
    fps = gen["fps"]
    if len(fps) == 0:
        return math.nan, math.nan
    sums = _tanimoto(fps, fps, moments=True, device=device, progress=progress, desc="IntDiv")
    means = sums / len(fps)  # (n, 2): per molecule, mean T and mean T**2 over all (incl. self)
    return float(1 - means[:, 0].mean()), float(1 - np.sqrt(means[:, 1]).mean())


def _wasserstein(gen: np.ndarray, ref: np.ndarray) -> float:
    gen, ref = gen[np.isfinite(gen)], ref[np.isfinite(ref)]
    if len(gen) == 0 or len(ref) == 0:
        return math.nan
    return float(wasserstein_distance(ref, gen))


# --------------------------------------------------------------------------- caching


def _cache_dir(cache_dir: str | os.PathLike | bool | None) -> Path | None:
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        from .data import default_cache_dir  # $MOLVAE_CACHE_DIR, else ~/.cache/molvae

        return default_cache_dir() / "metrics"
    return Path(cache_dir)


def _key(smiles: Iterable[str], what: str) -> str:
    h = hashlib.sha256(f"{_CACHE_VERSION}\n{what}\nrdkit {rdkit.__version__}\n".encode())
    for s in sorted(smiles):
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()


def _load_npz(path: Path | None) -> Stats | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):  # corrupt or truncated: compute again
        return None


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Writes through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache must not stop an evaluation
        warnings.warn(f"could not write metrics cache {path}: {e}", RuntimeWarning, stacklevel=3)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- FCD


def _fcd_model(device: str, n_jobs: int | None, batch_size: int) -> Any:
    from fcd_torch import FCD

    return FCD(device=device, n_jobs=parallel.n_jobs(n_jobs), batch_size=batch_size)


def _fcd_stats(model: Any, smiles: Sequence[str], progress: bool, desc: str) -> Stats:
    """ChemNet activation mean and covariance: FCD.precalc, run in chunks for a progress bar."""
    if len(smiles) < 2:
        return {}
    smiles = list(smiles)
    step = 16384
    acts = []
    with (
        warnings.catch_warnings(),
        tqdm(
            total=len(smiles), desc=desc, unit="mol", disable=not progress, file=sys.stderr
        ) as bar,
    ):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="fcd_torch")
        for i in range(0, len(smiles), step):
            acts.append(model.get_predictions(smiles[i : i + step]))
            bar.update(len(acts[-1]))
    x = np.concatenate(acts)
    return {"mu": x.mean(0), "sigma": np.cov(x.T)}  # exactly what FCD.precalc returns


def _fcd_distance(model: Any, pref: Stats, pgen: Stats) -> float:
    if not pref or not pgen:
        return math.nan
    with warnings.catch_warnings():
        # fcd_torch 1.0.7 calls numpy/scipy APIs that newer releases deprecate
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="fcd_torch")
        return float(model.metric(pref=pref, pgen=pgen))




# --------------------------------------------------------------------------- references

def _reference_features(
    reference: Sequence[str], key: str, n_jobs: int | None, progress: bool, cache_dir: Any
) -> Stats:
    folder = _cache_dir(cache_dir)
    path = None if folder is None else folder / f"ref-{key[:32]}.npz"
    stats = _load_npz(path)
    if stats is None:
        results = _featurize(reference, _REF, n_jobs, progress, "reference features")
        bad = sum(r is None for r in results)
        if bad:
            warnings.warn(
                f"{bad} of {len(results)} reference SMILES are invalid; skipped",
                RuntimeWarning,
                stacklevel=3,
            )
        stats = _aggregate(results, _REF)
        stats["smiles"] = np.array([r[0] for r in results if r is not None], dtype=str)
        if path is not None:
            _atomic_write(path, lambda f: np.savez_compressed(f, **stats))
    return stats


def _add_reference_fcd(stats: Stats, key: str, model: Any, progress: bool, cache_dir: Any) -> None:
    folder = _cache_dir(cache_dir)
    path = None if folder is None else folder / f"fcd-{key[:32]}.npz"
    pref = _load_npz(path)
    if pref is None:
        pref = _fcd_stats(model, stats["smiles"].tolist(), progress, "reference ChemNet")
        if path is not None and pref:
            _atomic_write(path, lambda f: np.savez_compressed(f, **pref))
    stats.update({f"fcd_{k}": v for k, v in pref.items()})


def _smiles_hashes(smiles: Iterable[str]) -> np.ndarray:
    """64-bit BLAKE2b digests of strings, as uint64 in input order (the shipped train set's key).

    Two distinct strings share a digest with probability 2**-64; a sample is falsely taken for a
    training molecule with probability about len(train) / 2**64 (1e-13 for MOSES train).
    """
    digests = b"".join(hashlib.blake2b(s.encode(), digest_size=8).digest() for s in smiles)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def _hashed_novelty(canonical: set[str], train_hashes: np.ndarray) -> float:
    """Novelty against a sorted array of `_smiles_hashes` of the canonical training set."""
    if not canonical:
        return math.nan
    query = _smiles_hashes(canonical)
    if len(train_hashes) == 0:
        return 1.0
    at = np.minimum(np.searchsorted(train_hashes, query), len(train_hashes) - 1)
    return float((train_hashes[at] != query).mean())


@lru_cache(maxsize=8)
def _load_shipped(path: str, mtime_ns: int) -> Stats:
    """A shipped reference file (.npz of arrays, or one .npy), read once per process."""
    if path.endswith(".npy"):
        return {"hashes": np.load(path, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _canonical_set(
    smiles: Sequence[str], n_jobs: int | None, progress: bool, cache_dir: Any
) -> set[str]:
    """Canonical SMILES of a (training) set, cached as gzip text: RDKit versions differ."""
    folder = _cache_dir(cache_dir)
    path = None if folder is None else folder / f"canonical-{_key(smiles, 'canon')[:32]}.smi.gz"
    if path is not None and path.is_file():
        try:
            with gzip.open(path, "rt") as f:
                return set(f.read().split("\n")) - {""}
        except (OSError, EOFError):
            pass
    canonical = set(parallel.pmap(_canonical_chunk, smiles, jobs=n_jobs, progress=progress,
                                  desc="train canonical")) - {None}
    if path is not None:
        text = "\n".join(sorted(canonical)).encode()
        _atomic_write(path, lambda f: f.write(gzip.compress(text, compresslevel=6)))
    return canonical
