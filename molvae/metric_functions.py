"""The MOSES metrics one at a time: each function computes one metric of generated molecules
(valid, unique@k, novelty, IntDiv, SNN, Frag, Scaf, Filters, property distances, FCD), and
`reference_statistics` precomputes what they need of a reference set.

`molvae.metrics` is the public face of these (it re-exports every one) and adds the suite that
computes them all at once (`evaluate`); its docstring says where the definitions come from and
where molvae knowingly differs from molsets 0.3.1.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

from . import parallel
from ._features import (  # the internals the metrics below are built from
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
    _int_divs,
    _key,
    _load_npz,
    _reference_features,
    _snn,
    _wasserstein,
)
from .moses_files import shipped_reference

__all__ = [
    "fcd",
    "frag_similarity",
    "fraction_passes_filters",
    "fraction_unique",
    "fraction_valid",
    "internal_diversity",
    "novelty",
    "property_distances",
    "reference_statistics",
    "scaffold_similarity",
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
    return _count_similarity(samples, reference, _FRAG, "frag", "fragments", n_jobs, progress)


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
    return _count_similarity(samples, reference, _SCAF, "scaf", "scaffolds", n_jobs, progress)


def _count_similarity(samples: Sequence[str | None], reference: Sequence[str], feature: int,
                      key: str, what: str, n_jobs: int | None, progress: bool) -> float:
    """Cosine similarity of the two sides' count vectors of one feature (fragments or
    scaffolds), each aggregated over its valid molecules."""
    gen = _aggregate(_featurize(samples, feature, n_jobs, progress, what), feature)
    ref = _aggregate(_featurize(reference, feature, n_jobs, progress, f"reference {what}"),
                     feature)
    return _cosine(_counts(ref, key), _counts(gen, key))


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
