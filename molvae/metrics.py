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

Shipped reference statistics (``molvae/reference/``, made by scripts/make_reference_stats.py from
the MOSES splits; provenance.json records the RDKit version and the sha256 of each source file):
``test.npz`` and ``test_scaffolds.npz`` hold what `evaluate` needs of each test set (ChemNet mean
and covariance in float64, the distinct packed Morgan fingerprints, fragment and scaffold counts,
the per-molecule properties), ``train_hashes.npy`` the sorted 64-bit BLAKE2b digests of the
canonical MOSES training SMILES, for novelty. `evaluate` with its default references reads them
instead of computing, so it needs neither the MOSES csv files nor a pass of ChemNet over them.

Example:
    >>> from molvae.metrics import evaluate, format_table
    >>> m = evaluate(samples, test=test_smiles, train=train_smiles)  # doctest: +SKIP
    >>> print(format_table(m))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from . import moses_files, parallel
from ._features import (  # the internals the metrics below are built from
    _ALL,
    _FILTERS,
    _FP,
    _FRAG,
    _PROPS,
    _SCAF,
    PROPERTY_NAMES,
    Stats,
    _add_reference_fcd,
    _aggregate,
    _cache_dir,
    _canonical_chunk,
    _canonical_set,
    _cosine,
    _counts,
    _fcd_distance,
    _fcd_model,
    _fcd_stats,
    _featurize,
    _hashed_novelty,
    _int_divs,
    _key,
    _load_npz,
    _reference_features,
    _snn,
    _wasserstein,
)
from .filters import filter_failures, passes_filters  # public here too, as before
from .moses_files import (  # public here too, as before
    SPLITS,
    default_reference,
    load_moses,
    shipped_reference,
)

__all__ = [
    "PROPERTY_NAMES",
    "evaluate",
    "fcd",
    "filter_failures",
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
    "reference_properties",
    "reference_statistics",
    "scaffold_similarity",
    "shipped_reference",
    "snn",
]

# --------------------------------------------------------------------------- references


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
    canonical = parallel.pmap(
        _canonical_chunk, samples, jobs=n_jobs, progress=progress, desc="validity"
    )
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
    canonical = parallel.pmap(
        _canonical_chunk, samples, jobs=n_jobs, progress=progress, desc="uniqueness"
    )
    return _unique_at([c for c in canonical if c is not None], k)


def novelty(
    samples: Sequence[str | None],
    train: Sequence[str],
    *,
    n_jobs: int | None = None,
    progress: bool = False,
    cache_dir: str | os.PathLike | bool | None = None,
) -> float:
    """Fraction of distinct valid samples whose canonical SMILES is not in the training set.

    The training set is canonicalized with the installed RDKit too, so a version change in
    RDKit's canonical form does not show up as novelty; the canonical set is cached on disk as
    in `evaluate`.

    Args:
        samples: generated SMILES.
        train: training SMILES.
        n_jobs: worker processes; default all cores.
        progress: progress bar on stderr.
        cache_dir: cache folder for the canonical training set (None -> default folder,
            False -> no caching).

    Returns:
        Fraction in [0, 1]; NaN when no sample is valid.
    """
    canonical = set(
        parallel.pmap(_canonical_chunk, samples, jobs=n_jobs, progress=progress, desc="novelty")
    ) - {None}
    return _novelty(canonical, _canonical_set(train, n_jobs, progress, cache_dir))


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


def fraction_passes_filters(
    samples: Sequence[str | None], *, n_jobs: int | None = None, progress: bool = False
) -> float:
    """Fraction of valid samples that pass the MOSES filters (see `molvae.filters`).

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
    reference: Sequence[str] | None = None,
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
        reference: reference SMILES; None -> the MOSES test set (shipped statistics, nothing
            computed for it).
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
    canonical = parallel.pmap(_canonical_chunk, samples, jobs=n_jobs)
    gen = [c for c in canonical if c is not None]
    if reference is None:
        shipped = shipped_reference("test")
        pref = {"mu": shipped["fcd_mu"], "sigma": shipped["fcd_sigma"]}
    else:  # the reference's ChemNet statistics come from the on-disk cache evaluate() uses
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

    With ``test=None`` the MOSES references come from the statistics shipped in
    ``molvae/reference/`` (see the module docstring), so nothing is computed for them; a split
    whose shipped file is missing is read from ``data/moses/`` and computed. Statistics of
    explicitly given references (features and ChemNet mean/covariance) are cached on disk, keyed
    by the sha256 of the sorted reference SMILES, so each set is processed once.

    Args:
        samples: generated SMILES (None allowed for failed decodes).
        test: test SMILES. None -> the MOSES test set (shipped statistics), and then also the
            MOSES scaffold test and train sets for those of ``test_scaffolds`` and ``train`` not
            given.
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
        FileNotFoundError: test is None and a MOSES split is neither shipped nor in
            ``data/moses/``.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("evaluate() needs at least one sample")
    ks = [ks] if isinstance(ks, int) else list(ks)
    refs, shipped, train, train_hashes = _resolve_references(test, test_scaffolds, train)

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
        name: shipped[name]
        if name in shipped
        else _reference_features(refs[name], keys[name], n_jobs, progress, cache_dir)
        for name in SPLITS
        if name in shipped or name in refs
    }
    train_set = None if train is None else _canonical_set(train, n_jobs, progress, cache_dir)

    model = _fcd_model(device, n_jobs, batch_size)
    pgen = _fcd_stats(model, canonical, progress, "ChemNet")
    for name, stats in ref_stats.items():
        if name not in shipped:
            _add_reference_fcd(stats, keys[name], model, progress, cache_dir)
        metrics.update(_reference_metrics(name, stats, gen, model, pgen, device, progress))
    metrics["IntDiv"], metrics["IntDiv2"] = _int_divs(gen, device, progress)
    metrics["Filters"] = float(gen["passes"].mean()) if canonical else math.nan
    if "Test" in ref_stats:
        for name in PROPERTY_NAMES:
            metrics[name] = _wasserstein(gen[name], ref_stats["Test"][name])
    if train_set is not None:
        metrics["Novelty"] = _novelty(set(canonical), train_set)
    elif train_hashes is not None:
        metrics["Novelty"] = _hashed_novelty(set(canonical), train_hashes["hashes"])
    return {key: float(value) for key, value in metrics.items()}


def _resolve_references(test: Sequence[str] | None, test_scaffolds: Sequence[str] | None,
                        train: Sequence[str] | None) -> tuple[dict, dict, object, object]:
    """evaluate()'s references: with ``test=None`` the shipped MOSES statistics where they
    exist (else the split read from data/moses), for each of the scaffold test and train sets
    not given. Returns (given reference SMILES by name, shipped Stats by name, train SMILES or
    None, shipped train hashes or None)."""
    shipped: dict[str, Stats] = {}
    train_hashes = None
    if test is None:
        given = {"Test": None, "TestSF": test_scaffolds}
        for name, split in SPLITS.items():
            if given[name] is None and (stats := moses_files.shipped(split)) is not None:
                shipped[name] = stats
            elif given[name] is None:
                given[name] = default_reference(split)
        test, test_scaffolds = given["Test"], given["TestSF"]
        if train is None:
            train_hashes = moses_files.shipped("train")
            train = default_reference("train") if train_hashes is None else None
    refs = {name: ref for name, ref in {"Test": test, "TestSF": test_scaffolds}.items()
            if ref is not None}
    return refs, shipped, train, train_hashes


def _reference_metrics(name: str, stats: Stats, gen: Stats, model, pgen, device: str,
                       progress: bool) -> dict[str, float]:
    """FCD, SNN, Frag and Scaf of the samples' features ``gen`` against one reference set."""
    pref = {"mu": stats["fcd_mu"], "sigma": stats["fcd_sigma"]} if "fcd_mu" in stats else {}
    return {f"FCD/{name}": _fcd_distance(model, pref, pgen),
            f"SNN/{name}": _snn(gen, stats, device, progress, f"SNN/{name}"),
            f"Frag/{name}": _cosine(_counts(stats, "frag"), _counts(gen, "frag")),
            f"Scaf/{name}": _cosine(_counts(stats, "scaf"), _counts(gen, "scaf"))}


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


def reference_properties(
    split: str = "test", *, n_jobs: int | None = None, progress: bool = False
) -> dict[str, np.ndarray]:
    """`molecule_properties` of a MOSES split: the shipped arrays, else computed from data/moses.

    Args:
        split: "test" or "test_scaffolds".
        n_jobs: worker processes when computing; default all cores.
        progress: progress bars on stderr when computing.

    Returns:
        ``{"logP": array, "SA": array, "QED": array, "weight": array}`` (float64, file order).
    """
    stats = moses_files.shipped(split) if split in SPLITS.values() else None
    if stats is None:
        return molecule_properties(default_reference(split), n_jobs=n_jobs, progress=progress)
    return {name: np.asarray(stats[name], dtype=float) for name in PROPERTY_NAMES}


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
