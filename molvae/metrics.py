"""MOSES-style evaluation of generated molecules.

The metrics, their names and their edge cases follow MOSES -- Polykovskiy et al. 2020, "Molecular
Sets (MOSES): A Benchmarking Platform for Molecular Generation Models", Front. Pharmacol. 11:565644
-- and its reference implementation (molsets 0.3.1), so that numbers can be set beside the
published tables. The code here is written from those definitions; where the reference code and the
paper's prose differ, the code wins, because the published numbers came from it (see
`internal_diversity`, `frag_similarity` and `scaffold_similarity`).

Where molvae knowingly differs from molsets 0.3.1:
    - A sample with whitespace inside ("CCO ethanol") is invalid; RDKit would read it as ethanol.
    - Novelty canonicalizes the training set with the installed RDKit (molsets compares against
      the raw training strings, canonicalized by a 2019 RDKit).
    - SA comes from the installed RDKit's Contrib SA_Score (molsets ships its own older copy).
    - Morgan bits come from ``rdFingerprintGenerator`` (bit-identical to the deprecated
      ``GetMorganFingerprintAsBitVect`` that molsets calls).

Third-party data (read at run time, shipped unchanged in ``molvae/data_files/``):
    mcf.csv, wehi_pains.csv -- the MCF and PAINS SMARTS used by the MOSES filters, copied from
    molsets 0.3.1 (``moses/metrics/``), Copyright 2018 Insilico Medicine, Inc, MIT license.
    See molvae/data_files/README.md. No molsets code is copied.

Example:
    >>> from molvae.metrics import evaluate, format_table
    >>> m = evaluate(samples, test=test_smiles, train=train_smiles)  # doctest: +SKIP
    >>> print(format_table(m))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import math
import multiprocessing
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache, partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import rdkit
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import Crippen, Descriptors, rdFingerprintGenerator
from rdkit.Chem.QED import qed
from rdkit.Chem.Scaffolds import MurckoScaffold
from scipy.stats import wasserstein_distance
from tqdm import tqdm

__all__ = [
    "MOSES_DIR",
    "PROPERTY_NAMES",
    "evaluate",
    "fcd",
    "format_table",
    "frag_similarity",
    "fraction_passes_filters",
    "fraction_unique",
    "fraction_valid",
    "internal_diversity",
    "load_moses",
    "novelty",
    "passes_filters",
    "property_distances",
    "reference_statistics",
    "scaffold_similarity",
    "snn",
]

MOSES_DIR = Path(__file__).resolve().parent.parent / "data" / "moses"
_DATA_FILES = Path(__file__).resolve().parent / "data_files"

FP_RADIUS, FP_BITS = 2, 1024  # MOSES: Morgan, radius 2, 1024 bits
FILTER_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
MAX_RING_SIZE = 7  # MOSES rejects any ring with len(ring) >= 8
SCAFFOLD_MIN_RINGS = 2  # MOSES compute_scaffolds(min_rings=2): smaller scaffolds are not counted
PROPERTY_NAMES = ("logP", "SA", "QED", "weight")

# Bump when a definition changes: it is part of every cache key.
_CACHE_VERSION = "molvae-metrics-1"
_CHUNK = 256  # molecules per worker task
_MIN_PARALLEL = 2000  # below this many molecules a process pool costs more than it saves
_ROWS, _COLS = 2048, 8192  # Tanimoto block: (2048, 8192) float32 = 64 MiB

# What _featurize_chunk computes for each molecule; a bit mask keeps pickled tasks tiny.
_FP, _FRAG, _SCAF, _PROPS, _FILTERS = 1, 2, 4, 8, 16
_REF = _FP | _FRAG | _SCAF | _PROPS
_ALL = _REF | _FILTERS

Stats = dict[str, np.ndarray]


# --------------------------------------------------------------------------- per molecule


def _to_mol(smiles: object) -> Chem.Mol | None:
    """Parses one sample; None for non-strings, blanks, inner whitespace, unparsable or empty."""
    if not isinstance(smiles, str):
        return None
    text = smiles.strip()
    # RDKit reads "CCO name" as ethanol named "name"; a sample with a space in it is not a SMILES.
    if not text or any(c.isspace() for c in text):
        return None
    mol = Chem.MolFromSmiles(text)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


@lru_cache(maxsize=1)
def _morgan() -> Any:
    return rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)


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


@lru_cache(maxsize=1)
def _filter_patterns() -> tuple[Chem.Mol, ...]:
    """The MCF and PAINS SMARTS of MOSES, parsed once per process."""
    with open(_DATA_FILES / "mcf.csv", newline="") as f:
        smarts = [row["smarts"] for row in csv.DictReader(f)]
    with open(_DATA_FILES / "wehi_pains.csv", newline="") as f:
        # No header; the SMARTS field is padded with spaces after its closing quote.
        smarts += [row[0].strip() for row in csv.reader(f) if row]
    patterns = tuple(Chem.MolFromSmarts(s) for s in smarts)
    bad = [s for s, p in zip(smarts, patterns, strict=True) if p is None]
    if bad:
        raise RuntimeError(f"unparsable filter SMARTS in {_DATA_FILES}: {bad[:3]}")
    return patterns


def _passes(mol: Chem.Mol) -> bool:
    if any(len(ring) > MAX_RING_SIZE for ring in mol.GetRingInfo().AtomRings()):
        return False
    if any(a.GetFormalCharge() != 0 or a.GetSymbol() not in FILTER_ATOMS for a in mol.GetAtoms()):
        return False
    with_h = Chem.AddHs(mol)  # several MCF/PAINS patterns name explicit hydrogens
    if any(with_h.HasSubstructMatch(p) for p in _filter_patterns()):
        return False
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


def _scaffold(mol: Chem.Mol) -> str | None:
    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = Chem.MolToSmiles(scaffold)
    if not smiles or scaffold.GetRingInfo().NumRings() < SCAFFOLD_MIN_RINGS:
        return None
    return smiles


def _safe(func: Callable[[Chem.Mol], float], mol: Chem.Mol) -> float:
    try:
        value = func(mol)
    except Exception:  # a descriptor failing on one odd molecule must not sink the batch
        return math.nan
    return math.nan if value is None else float(value)


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
                    (
                        _safe(Crippen.MolLogP, mol),
                        _safe(_sascorer().calculateScore, mol),
                        _safe(qed, mol),
                        _safe(Descriptors.MolWt, mol),
                    )
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


def _jobs(n_jobs: int | None) -> int:
    return max(1, os.cpu_count() or 1) if n_jobs is None else max(1, int(n_jobs))


def _pmap(
    func: Callable[[list], list], items: Sequence, n_jobs: int | None, progress: bool, desc: str
) -> list:
    """Maps a chunk function over items in order, in a process pool when it pays."""
    items = list(items)
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    n_jobs = min(_jobs(n_jobs), len(chunks))
    out: list = []
    with tqdm(
        total=len(items), desc=desc, unit="mol", disable=not progress, file=sys.stderr
    ) as bar:
        if n_jobs <= 1 or len(items) < _MIN_PARALLEL:
            results: Iterable[list] = map(func, chunks)
            for chunk, result in zip(chunks, results, strict=True):
                out.extend(result)
                bar.update(len(chunk))
        else:
            with multiprocessing.get_context().Pool(n_jobs) as pool:
                for chunk, result in zip(chunks, pool.imap(func, chunks), strict=True):
                    out.extend(result)
                    bar.update(len(chunk))
    return out


def _featurize(
    smiles: Sequence[object], flags: int, n_jobs: int | None, progress: bool, desc: str
) -> list[tuple | None]:
    """_featurize_chunk over a whole list, computing each distinct string once."""
    index: dict[object, int] = {}
    keys = [index.setdefault(s if isinstance(s, str) else None, len(index)) for s in smiles]
    unique = list(index)
    done = _pmap(partial(_featurize_chunk, flags=flags), unique, n_jobs, progress, desc)
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

    return FCD(device=device, n_jobs=_jobs(n_jobs), batch_size=batch_size)


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


def load_moses(split: str) -> list[str]:
    """Reads a MOSES split shipped with the repository.

    Args:
        split: "train", "test" or "test_scaffolds".

    Returns:
        The SMILES column of ``data/moses/{split}.csv.gz``.

    Raises:
        FileNotFoundError: the file is not there.
    """
    path = MOSES_DIR / f"{split}.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"MOSES {split} set not found at {path}; pass the reference SMILES explicitly "
            "(test=..., test_scaffolds=..., train=...) or put the MOSES csv.gz files there"
        )
    with gzip.open(path, "rt", newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        column = header.index("SMILES") if "SMILES" in header else 0
        return [row[column] for row in rows if row]


def reference_statistics(
    reference: Sequence[str],
    *,
    fcd: bool = True,
    n_jobs: int | None = None,
    device: str = "cpu",
    batch_size: int = 512,
    progress: bool = False,
    cache_dir: str | os.PathLike | bool | None = None,
) -> Stats:
    """Precomputes what the metrics need from a reference set, cached on disk.

    Like MOSES' ``compute_intermediate_statistics``. Invalid reference SMILES are skipped with a
    warning. The cache key is the sha256 of the sorted reference SMILES (plus the RDKit version
    and a definitions version), so a changed set never reads stale numbers.

    Args:
        reference: reference SMILES (e.g. the MOSES test set).
        fcd: also compute the ChemNet statistics (``fcd_mu``, ``fcd_sigma``).
        n_jobs: worker processes; default all cores.
        device: torch device for ChemNet.
        batch_size: ChemNet batch size.
        progress: progress bars on stderr.
        cache_dir: folder for .npz files; None -> ``$XDG_CACHE_HOME/molvae/metrics`` (default
            ``~/.cache/molvae/metrics``); False -> no caching.

    Returns:
        Arrays: ``fps`` (packed Morgan bits), ``frag_keys``/``frag_counts``,
        ``scaf_keys``/``scaf_counts``, one array per name in PROPERTY_NAMES, ``smiles`` (the valid
        reference SMILES, canonical), and ``fcd_mu``/``fcd_sigma`` when asked.
    """
    key = _key(reference, "reference")
    stats = _reference_features(reference, key, n_jobs, progress, cache_dir)
    if fcd:
        model = _fcd_model(device, n_jobs, batch_size)
        _add_reference_fcd(stats, key, model, progress, cache_dir)
    return stats


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
    canonical = set(_pmap(_canonical_chunk, smiles, n_jobs, progress, "train canonical")) - {None}
    if path is not None:
        text = "\n".join(sorted(canonical)).encode()
        _atomic_write(path, lambda f: f.write(gzip.compress(text, compresslevel=6)))
    return canonical


# --------------------------------------------------------------------------- building blocks


def fraction_valid(
    samples: Sequence[str | None], *, n_jobs: int | None = None, progress: bool = False
) -> float:
    """Fraction of samples that are valid molecules.

    None, non-strings, empty or whitespace strings, strings with whitespace inside, RDKit-unparsable
    strings and molecules with no atoms are invalid.

    Args:
        samples: generated SMILES.
        n_jobs: worker processes; default all cores.
        progress: progress bar on stderr.

    Returns:
        valid / len(samples).
    """
    if len(samples) == 0:
        raise ValueError("fraction_valid() needs at least one sample")
    canonical = _pmap(_canonical_chunk, samples, n_jobs, progress, "validity")
    return sum(c is not None for c in canonical) / len(samples)


def _unique_at(canonical: Sequence[str], k: int | None, stacklevel: int = 3) -> float:
    if k is not None:
        if len(canonical) < k:
            warnings.warn(
                f"unique@{k}: only {len(canonical)} valid molecules, fewer than {k}; "
                "using all of them",
                stacklevel=stacklevel,
            )
        canonical = canonical[:k]
    return len(set(canonical)) / len(canonical) if canonical else math.nan


def fraction_unique(
    samples: Sequence[str | None],
    k: int | None = None,
    *,
    n_jobs: int | None = None,
    progress: bool = False,
) -> float:
    """unique@k: fraction of distinct canonical SMILES among the first k valid samples.

    Invalid samples are dropped first. With fewer than k valid samples, all are used and a
    warning is issued (as MOSES does).

    Args:
        samples: generated SMILES.
        k: how many valid samples to look at; None -> all.
        n_jobs: worker processes; default all cores.
        progress: progress bar on stderr.

    Returns:
        Fraction in (0, 1]; NaN when no sample is valid.
    """
    canonical = _pmap(_canonical_chunk, samples, n_jobs, progress, "uniqueness")
    return _unique_at([c for c in canonical if c is not None], k)


def novelty(
    samples: Sequence[str | None],
    train: Sequence[str],
    *,
    n_jobs: int | None = None,
    progress: bool = False,
) -> float:
    """Fraction of distinct valid samples whose canonical SMILES is not in the training set.

    The training set is canonicalized with the installed RDKit too, so a version change in
    RDKit's canonical form does not show up as novelty.

    Args:
        samples: generated SMILES.
        train: training SMILES.
        n_jobs: worker processes; default all cores.
        progress: progress bar on stderr.

    Returns:
        Fraction in [0, 1]; NaN when no sample is valid.
    """
    canonical = set(_pmap(_canonical_chunk, samples, n_jobs, progress, "novelty")) - {None}
    return _novelty(canonical, _canonical_set(train, n_jobs, progress, False))


def _novelty(canonical: set[str], train: set[str]) -> float:
    return len(canonical - train) / len(canonical) if canonical else math.nan


def internal_diversity(
    samples: Sequence[str | None],
    p: int = 1,
    *,
    n_jobs: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> float:
    """IntDiv_p: 1 minus the power mean of Tanimoto similarity over all pairs of samples.

    Morgan fingerprints (radius 2, 1024 bits); pairs include each molecule with itself and
    duplicates are kept. As in the MOSES code (which produced its published tables), the p-th
    root is taken per molecule before averaging: ``1 - mean_i (mean_j T_ij**p)**(1/p)``. For
    p=1 this equals the paper's ``1 - (mean_ij T_ij**p)**(1/p)``; for p=2 it is slightly larger.

    Args:
        samples: generated SMILES; invalid ones are dropped.
        p: 1 (IntDiv) or 2 (IntDiv2).
        n_jobs: worker processes; default all cores.
        device: torch device for the similarity matrix.
        progress: progress bars on stderr.

    Returns:
        Diversity in [0, 1]; NaN when no sample is valid.
    """
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    gen = _aggregate(_featurize(samples, _FP, n_jobs, progress, "fingerprints"), _FP)
    return _int_divs(gen, device, progress)[p - 1]


def snn(
    samples: Sequence[str | None],
    reference: Sequence[str],
    *,
    n_jobs: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> float:
    """SNN: mean over valid samples of the largest Tanimoto similarity to any reference molecule.

    Morgan fingerprints, radius 2, 1024 bits; the similarity matrix is reduced in float32 blocks.

    Args:
        samples: generated SMILES; invalid ones are dropped.
        reference: reference SMILES.
        n_jobs: worker processes; default all cores.
        device: torch device for the similarity matrix.
        progress: progress bars on stderr.

    Returns:
        Similarity in [0, 1]; NaN when either set has no valid molecule.
    """
    gen = _aggregate(_featurize(samples, _FP, n_jobs, progress, "fingerprints"), _FP)
    ref = _aggregate(_featurize(reference, _FP, n_jobs, progress, "reference fingerprints"), _FP)
    return _snn(gen, ref, device, progress)


def frag_similarity(
    samples: Sequence[str | None],
    reference: Sequence[str],
    *,
    n_jobs: int | None = None,
    progress: bool = False,
) -> float:
    """Frag: cosine similarity of BRICS fragment count vectors.

    As the MOSES code does, fragments are the pieces of ``FragmentOnBRICSBonds`` (canonical
    SMILES with their numbered attachment points), counted with multiplicity over all valid
    molecules.

    Args:
        samples: generated SMILES; invalid ones are dropped.
        reference: reference SMILES.
        n_jobs: worker processes; default all cores.
        progress: progress bars on stderr.

    Returns:
        Similarity in [0, 1]; NaN when either side has no fragment.
    """
    gen = _aggregate(_featurize(samples, _FRAG, n_jobs, progress, "fragments"), _FRAG)
    ref = _aggregate(_featurize(reference, _FRAG, n_jobs, progress, "reference fragments"), _FRAG)
    return _cosine(_counts(ref, "frag"), _counts(gen, "frag"))


def scaffold_similarity(
    samples: Sequence[str | None],
    reference: Sequence[str],
    *,
    n_jobs: int | None = None,
    progress: bool = False,
) -> float:
    """Scaf: cosine similarity of Bemis-Murcko scaffold count vectors.

    Scaffolds are canonical SMILES of ``MurckoScaffold.GetScaffoldForMol``. As in the MOSES code
    (``compute_scaffolds(min_rings=2)``), empty scaffolds and scaffolds with fewer than two rings
    are not counted.

    Args:
        samples: generated SMILES; invalid ones are dropped.
        reference: reference SMILES.
        n_jobs: worker processes; default all cores.
        progress: progress bars on stderr.

    Returns:
        Similarity in [0, 1]; NaN when either side has no counted scaffold.
    """
    gen = _aggregate(_featurize(samples, _SCAF, n_jobs, progress, "scaffolds"), _SCAF)
    ref = _aggregate(_featurize(reference, _SCAF, n_jobs, progress, "reference scaffolds"), _SCAF)
    return _cosine(_counts(ref, "scaf"), _counts(gen, "scaf"))


def passes_filters(mol_or_smiles: Chem.Mol | str | None) -> bool:
    """Whether one molecule passes the MOSES filters.

    It must have only the atoms C, N, S, O, F, Cl, Br, H; no formal charge; no ring of 8 or more
    atoms; no match (with explicit hydrogens added) to any MCF or PAINS SMARTS; and its
    non-isomeric SMILES must parse again.

    Args:
        mol_or_smiles: an RDKit molecule or a SMILES string.

    Returns:
        True if it passes; False if it fails or is not a valid molecule.
    """
    with rdBase.BlockLogs():
        if isinstance(mol_or_smiles, Chem.Mol):
            mol = Chem.Mol(mol_or_smiles)  # work on a copy: sanitizing changes the molecule
            try:
                Chem.SanitizeMol(mol)
            except (ValueError, RuntimeError):
                return False
            if mol.GetNumAtoms() == 0:
                return False
        else:
            mol = _to_mol(mol_or_smiles)
            if mol is None:
                return False
        return _passes(mol)


def fraction_passes_filters(
    samples: Sequence[str | None], *, n_jobs: int | None = None, progress: bool = False
) -> float:
    """Fraction of valid samples that pass the MOSES filters (see `passes_filters`).

    Args:
        samples: generated SMILES; invalid ones are dropped.
        n_jobs: worker processes; default all cores.
        progress: progress bar on stderr.

    Returns:
        Fraction in [0, 1]; NaN when no sample is valid.
    """
    gen = _aggregate(_featurize(samples, _FILTERS, n_jobs, progress, "filters"), _FILTERS)
    return float(gen["passes"].mean()) if len(gen["passes"]) else math.nan


def property_distances(
    samples: Sequence[str | None],
    reference: Sequence[str],
    *,
    n_jobs: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Wasserstein-1 distances between sample and reference property distributions.

    Properties: logP (Crippen MolLogP), SA (RDKit Contrib SA_Score), QED, weight (MolWt). Invalid
    samples are dropped; duplicates are kept.

    Args:
        samples: generated SMILES.
        reference: reference SMILES.
        n_jobs: worker processes; default all cores.
        progress: progress bars on stderr.

    Returns:
        ``{"logP": ..., "SA": ..., "QED": ..., "weight": ...}``.
    """
    gen = _aggregate(_featurize(samples, _PROPS, n_jobs, progress, "properties"), _PROPS)
    ref = _aggregate(_featurize(reference, _PROPS, n_jobs, progress, "reference props"), _PROPS)
    return {name: _wasserstein(gen[name], ref[name]) for name in PROPERTY_NAMES}


def fcd(
    samples: Sequence[str | None],
    reference: Sequence[str],
    *,
    n_jobs: int | None = None,
    device: str = "cpu",
    batch_size: int = 512,
    progress: bool = False,
    cache_dir: str | os.PathLike | bool | None = None,
) -> float:
    """Frechet ChemNet Distance between valid samples and a reference set (fcd_torch).

    Args:
        samples: generated SMILES; invalid ones are dropped.
        reference: reference SMILES.
        n_jobs: data-loading workers for ChemNet; default all cores.
        device: torch device for ChemNet.
        batch_size: ChemNet batch size.
        progress: progress bars on stderr.
        cache_dir: cache of reference statistics, as in `evaluate` (None -> default folder,
            False -> no caching).

    Returns:
        FCD (>= 0, up to round-off); NaN when either set has fewer than two valid molecules.
    """
    model = _fcd_model(device, n_jobs, batch_size)
    gen = [c for c in _pmap(_canonical_chunk, samples, n_jobs, False, "") if c is not None]
    # the reference's ChemNet statistics come from the same on-disk cache evaluate() uses
    folder = _cache_dir(cache_dir)
    key = _key(reference, "reference")
    pref = _load_npz(None if folder is None else folder / f"fcd-{key[:32]}.npz")
    if pref is None:
        stats = reference_statistics(
            reference,
            fcd=True,
            n_jobs=n_jobs,
            device=device,
            batch_size=batch_size,
            progress=progress,
            cache_dir=cache_dir,
        )
        pref = {k[4:]: v for k, v in stats.items() if k.startswith("fcd_")}
    return _fcd_distance(model, pref, _fcd_stats(model, gen, progress, "ChemNet"))


# --------------------------------------------------------------------------- evaluate


def evaluate(
    samples: Sequence[str | None],
    test: Sequence[str] | None = None,
    test_scaffolds: Sequence[str] | None = None,
    train: Sequence[str] | None = None,
    *,
    n_jobs: int | None = None,
    device: str = "cpu",
    batch_size: int = 512,
    progress: bool = False,
    ks: int | Iterable[int] = (1000, 10000),
    cache_dir: str | os.PathLike | bool | None = None,
) -> dict[str, float]:
    """MOSES metrics of generated molecules.

    ``valid`` counts every sample; all other metrics use only the valid ones (canonical RDKit
    SMILES, duplicates kept except where a metric says "unique"). Keys, in order: ``valid``,
    ``unique@k`` for each k, ``FCD/Test``, ``SNN/Test``, ``Frag/Test``, ``Scaf/Test``, the same
    four for ``TestSF`` (scaffold test set), ``IntDiv``, ``IntDiv2``, ``Filters``, ``logP``,
    ``SA``, ``QED``, ``weight`` (Wasserstein-1 distances to the test set) and ``Novelty``. Keys
    whose reference set is not given are left out.

    Reference statistics (features and ChemNet mean/covariance) are cached on disk, keyed by the
    sha256 of the sorted reference SMILES, so the 176k-molecule MOSES test sets are processed once.

    Args:
        samples: generated SMILES (None allowed for failed decodes).
        test: test SMILES. None -> the MOSES test set in ``data/moses/``, and then also the MOSES
            scaffold test and train sets for those of ``test_scaffolds`` and ``train`` not given.
        test_scaffolds: scaffold-split test SMILES, or None.
        train: training SMILES for Novelty, or None.
        n_jobs: worker processes; default ``os.cpu_count()``.
        device: torch device for ChemNet and the Tanimoto matrices.
        batch_size: ChemNet batch size.
        progress: tqdm progress bars on stderr.
        ks: the k of each ``unique@k``.
        cache_dir: folder for cached reference statistics; None ->
            ``$XDG_CACHE_HOME/molvae/metrics`` (default ``~/.cache/molvae/metrics``); False -> none.

    Returns:
        Metric name -> value (Python float; NaN where undefined, e.g. no valid sample).

    Raises:
        ValueError: no samples.
        FileNotFoundError: test is None and the MOSES files are not in ``data/moses/``.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("evaluate() needs at least one sample")
    if test is None:
        test = load_moses("test")
        test_scaffolds = load_moses("test_scaffolds") if test_scaffolds is None else test_scaffolds
        train = load_moses("train") if train is None else train
    ks = [ks] if isinstance(ks, int) else list(ks)
    refs = {"Test": test, "TestSF": test_scaffolds}
    refs = {name: ref for name, ref in refs.items() if ref is not None}

    # RDKit work in process pools first; torch (ChemNet, Tanimoto) afterwards, so no pool is
    # forked from a process whose torch thread pool is already running.
    results = _featurize(samples, _ALL, n_jobs, progress, "samples")
    canonical = [r[0] for r in results if r is not None]
    gen = _aggregate(results, _ALL)
    metrics: dict[str, float] = {"valid": len(canonical) / len(samples)}
    for k in ks:
        metrics[f"unique@{k}"] = _unique_at(canonical, k)
    keys = {name: _key(ref, "reference") for name, ref in refs.items()}
    ref_stats = {
        name: _reference_features(ref, keys[name], n_jobs, progress, cache_dir)
        for name, ref in refs.items()
    }
    train_set = None if train is None else _canonical_set(train, n_jobs, progress, cache_dir)

    model = _fcd_model(device, n_jobs, batch_size)
    pgen = _fcd_stats(model, canonical, progress, "ChemNet")
    for name, stats in ref_stats.items():
        _add_reference_fcd(stats, keys[name], model, progress, cache_dir)
        pref = {"mu": stats["fcd_mu"], "sigma": stats["fcd_sigma"]} if "fcd_mu" in stats else {}
        metrics[f"FCD/{name}"] = _fcd_distance(model, pref, pgen)
        metrics[f"SNN/{name}"] = _snn(gen, stats, device, progress, f"SNN/{name}")
        metrics[f"Frag/{name}"] = _cosine(_counts(stats, "frag"), _counts(gen, "frag"))
        metrics[f"Scaf/{name}"] = _cosine(_counts(stats, "scaf"), _counts(gen, "scaf"))
    metrics["IntDiv"], metrics["IntDiv2"] = _int_divs(gen, device, progress)
    metrics["Filters"] = float(gen["passes"].mean()) if canonical else math.nan
    if "Test" in ref_stats:
        for name in PROPERTY_NAMES:
            metrics[name] = _wasserstein(gen[name], ref_stats["Test"][name])
    if train_set is not None:
        metrics["Novelty"] = _novelty(set(canonical), train_set)
    return {key: float(value) for key, value in metrics.items()}


def _format_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "nan"
    text = f"{value:.4f}"
    return "0.0000" if text == "-0.0000" else text  # FCD of a set with itself is -1e-13 or so


def format_table(metrics: dict[str, float]) -> str:
    """Formats metrics as a two-column, aligned text table.

    Args:
        metrics: name -> value, e.g. from `evaluate`.

    Returns:
        Lines ``metric  value`` with a rule under the header; values to 4 decimals.
    """
    rows = [(str(k), _format_value(v)) for k, v in metrics.items()]
    w1 = max([len("metric")] + [len(k) for k, _ in rows])
    w2 = max([len("value")] + [len(v) for _, v in rows])
    lines = [f"{'metric':<{w1}}  {'value':>{w2}}", f"{'-' * w1}  {'-' * w2}"]
    lines += [f"{k:<{w1}}  {v:>{w2}}" for k, v in rows]
    return "\n".join(lines)


def molecule_properties(
    smiles: Sequence[str | None], *, n_jobs: int | None = None, progress: bool = False
) -> dict[str, np.ndarray]:
    """Per-molecule logP, SA, QED and weight of the valid molecules (invalid ones dropped).

    Args:
        smiles: SMILES strings; invalid or empty entries are skipped.
        n_jobs: worker processes; default all cores.
        progress: progress bars on stderr.

    Returns:
        ``{"logP": array, "SA": array, "QED": array, "weight": array}``.
    """
    stats = _aggregate(_featurize(smiles, _PROPS, n_jobs, progress, "properties"), _PROPS)
    return {name: np.asarray(stats[name], dtype=float) for name in PROPERTY_NAMES}
