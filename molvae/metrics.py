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

Each metric alone lives in ``molvae.metric_functions`` and is re-exported here; this module adds
the suite that computes them all in one pass over the samples (`evaluate`), its table
(`format_table`) and the per-molecule properties behind the property panels.

Example:
    >>> from molvae.metrics import evaluate, format_table
    >>> m = evaluate(samples, test=test_smiles, train=train_smiles)  # doctest: +SKIP
    >>> print(format_table(m))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from . import moses_files
from ._features import (  # the internals the metrics below are built from
    _ALL,
    _PROPS,
    PROPERTY_NAMES,
    Stats,
    _add_reference_fcd,
    _aggregate,
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
    _reference_features,
    _snn,
    _wasserstein,
)
from .filters import filter_failures, passes_filters  # public here too, as before
from .metric_functions import (  # each metric alone; public here too, as before
    _novelty,
    _unique_at,
    fcd,
    fraction_passes_filters,
    fraction_unique,
    fraction_valid,
    frag_similarity,
    internal_diversity,
    novelty,
    property_distances,
    reference_statistics,
    scaffold_similarity,
    snn,
)
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
