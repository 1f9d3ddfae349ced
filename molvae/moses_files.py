"""The MOSES reference sets: the csv.gz splits of a repository checkout (``data/moses``) and
the statistics of them that ship with the package (``molvae/reference/``, made by
scripts/make_reference_stats.py), which is all :func:`molvae.metrics.evaluate` needs in a
wheel install. See :mod:`molvae.metrics` for what the statistics hold.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import warnings
from pathlib import Path

import rdkit

from ._features import PROPERTY_NAMES, Stats, _load_shipped

__all__ = ["MOSES_DIR", "REFERENCE_DIR", "SPLITS", "load_moses", "shipped", "shipped_path",
           "shipped_reference", "default_reference"]

MOSES_DIR = Path(__file__).resolve().parent.parent / "data" / "moses"
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"  # package data, see above
# evaluate()'s metric-name suffix -> MOSES split; "train" is shipped as train_hashes.npy
SPLITS = {"Test": "test", "TestSF": "test_scaffolds"}
SHIPPED_KEYS = ("fcd_mu", "fcd_sigma", "fps", "frag_keys", "frag_counts", "scaf_keys",
                 "scaf_counts", *PROPERTY_NAMES)


def load_moses(split: str, folder: str | os.PathLike | None = None) -> list[str]:
    """Reads a MOSES split shipped with the repository.

    Args:
        split: "train", "test" or "test_scaffolds".
        folder: where the csv.gz files are; None -> ``data/moses`` of the repository checkout.

    Returns:
        The SMILES column of ``data/moses/{split}.csv.gz``.

    Raises:
        FileNotFoundError: the file is not there.
    """
    path = (MOSES_DIR if folder is None else Path(folder)) / f"{split}.csv.gz"
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


def shipped_path(split: str) -> Path:
    return REFERENCE_DIR / ("train_hashes.npy" if split == "train" else f"{split}.npz")


def shipped(split: str) -> Stats | None:
    """The shipped statistics of a MOSES split, or None when the file is not there."""
    path = shipped_path(split)
    if not path.is_file():
        return None
    provenance = REFERENCE_DIR / "provenance.json"
    made_with = json.loads(provenance.read_text()).get("rdkit") if provenance.is_file() else None
    if made_with is not None and made_with != rdkit.__version__:
        warnings.warn(
            f"the shipped MOSES reference statistics were made with RDKit {made_with}, this is "
            f"RDKit {rdkit.__version__}: canonical SMILES, fingerprints and scaffolds can differ "
            "slightly; pass test=/train= (or run scripts/make_reference_stats.py) for exact ones",
            RuntimeWarning,
            stacklevel=3,
        )
    return _load_shipped(str(path), path.stat().st_mtime_ns)


def shipped_reference(split: str) -> Stats:
    """Reads the reference statistics of a MOSES split that ship in ``molvae/reference/``.

    Args:
        split: "test" or "test_scaffolds" (the arrays `reference_statistics` gives, without
            ``smiles``; ``fps`` holds each distinct fingerprint once), or "train" (``hashes``:
            sorted uint64 digests of the canonical training SMILES).

    Returns:
        Name -> array; shared between calls, do not modify.

    Raises:
        FileNotFoundError: the file is not installed.
    """
    if split not in (*SPLITS.values(), "train"):
        raise ValueError(f"unknown MOSES split {split!r}")
    stats = shipped(split)
    if stats is None:
        raise FileNotFoundError(
            f"shipped MOSES {split} statistics not found at {shipped_path(split)}; reinstall "
            "molvae or make them with scripts/make_reference_stats.py"
        )
    return stats


def default_reference(split: str) -> list[str]:
    """load_moses for evaluate's defaults, whose error also names the missing shipped file."""
    try:
        return load_moses(split)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e} (the shipped statistics {shipped_path(split)} are missing too)"
        ) from None
