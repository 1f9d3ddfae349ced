"""Property columns for result tables: RDKit objectives from the registry, the MOSES filter
verdict with its reason, and novelty against a model's training set.

``property_table(smiles, ["qed", "sa", "filters", "novel"], model=m)`` gives the column names
and one dict of formatted cells per molecule; a molecule without a value gets empty cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .config import suggest

__all__ = ["ColumnError", "EXTRA_COLUMNS", "parse_properties", "property_table",
           "training_hashes"]

EXTRA_COLUMNS = ("filters", "novel")


class ColumnError(ValueError):
    """An unknown property name, or novelty without a known training set."""


def _known() -> list[str]:
    from .properties import OBJECTIVES
    return [*OBJECTIVES, *EXTRA_COLUMNS]


def parse_properties(spec: str | Sequence[str]) -> list[str]:
    """``"qed,sa,filters"`` -> ``["qed", "sa", "filters"]``; unknown names get a suggestion."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise ColumnError("give at least one property, e.g. qed,sa,filters")
    known = _known()
    for n in names:
        if n not in known:
            raise ColumnError(f"unknown property {n!r}{suggest(n, known)}; known: "
                              f"{', '.join(known)}")
    if len(set(names)) < len(names):
        raise ColumnError(f"a property is named twice: {','.join(names)}")
    return names


def _cell(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.4g}"


@lru_cache(maxsize=2)
def _hashes_of_file(path: str) -> np.ndarray:
    from ._features import _smiles_hashes
    from .readers import read_molecules
    return np.unique(_smiles_hashes(t for t in read_molecules(path).texts if t))


def training_hashes(model: Any = None, train: str | Path | None = None) -> np.ndarray:
    """Sorted 64-bit hashes (``molvae._features._smiles_hashes``) of the SMILES a ``novel``
    cell is checked against: ``train`` if given (as written in the file), else the bundled
    model's MOSES training set, recognised by the data fingerprint in the checkpoint and read
    from the canonical hashes shipped in ``molvae/reference`` (no data/moses needed)."""
    if train is not None:
        return _hashes_of_file(str(train))
    import json

    from .moses_files import REFERENCE_DIR, shipped_reference
    sha = ((getattr(model, "meta", None) or {}).get("data") or {}).get("train_sha256")
    prov = REFERENCE_DIR / "provenance.json"
    shipped = json.loads(prov.read_text())["files"]["train_hashes.npy"]["sha256"] \
        if prov.is_file() else None
    if sha and sha == shipped:
        return shipped_reference("train")["hashes"]
    raise ColumnError("`novel` needs the model's training molecules: give --train FILE "
                      "(the checkpoint's training data is not the MOSES train set)")


def property_table(smiles: Sequence[str | None], names: Sequence[str], *, model: Any = None,
                   train: str | Path | None = None, progress: bool = False
                   ) -> tuple[list[str], list[dict[str, str]]]:
    """Formatted property cells of each molecule, in input order.

    ``filters`` adds two columns, ``filters`` (pass/fail) and ``filters_reason``; ``novel``
    is yes/no. Invalid or missing molecules get empty cells.
    """
    from .properties import get_objective, score_all
    names = parse_properties(list(names))
    items = [s if s else None for s in smiles]
    rows: list[dict[str, str]] = [{} for _ in items]
    columns: list[str] = []
    objectives = [get_objective(n) for n in names if n not in EXTRA_COLUMNS]
    if objectives:
        res = score_all(items, objectives, progress=progress)
        for obj in objectives:
            for row, v in zip(rows, res.values[obj.name]):
                row[obj.name] = _cell(float(v))
    if "filters" in names:
        from .filters import filter_failures_many
        present = [i for i, s in enumerate(items) if s]
        fails = filter_failures_many([items[i] for i in present], progress=progress)
        for row in rows:
            row["filters"] = row["filters_reason"] = ""
        for i, why in zip(present, fails):
            rows[i]["filters"] = "fail" if why else "pass"
            rows[i]["filters_reason"] = "; ".join(why)
    if "novel" in names:
        from ._features import _smiles_hashes
        known = training_hashes(model, train)
        present = [i for i, s in enumerate(items) if s]
        query = _smiles_hashes(items[i] for i in present)
        at = np.minimum(np.searchsorted(known, query), max(len(known) - 1, 0))
        seen = known[at] == query if len(known) else np.zeros(len(query), bool)
        for row in rows:
            row["novel"] = ""
        for i, hit in zip(present, seen):
            rows[i]["novel"] = "no" if hit else "yes"
    for n in names:
        columns += ["filters", "filters_reason"] if n == "filters" else [n]
    return columns, rows
