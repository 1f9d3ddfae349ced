"""Writing result tables: CSV, SMILES, SDF by suffix, or CSV on stdout. Every row is kept."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import chem

__all__ = ["TableWriter", "OutputError"]


class OutputError(ValueError):
    """An output file name with an unsupported suffix."""


class TableWriter:
    """Streams rows (dicts with a ``smiles`` key) to .csv, .smi, .sdf or stdout CSV."""

    def __init__(self, path: str | Path | None, columns: Sequence[str]):
        self.columns = list(columns)
        self.path = Path(path) if path else None
        self.kind = "csv"
        if self.path is not None:
            suffix = self.path.suffix.lower()
            kinds = {".csv": "csv", ".smi": "smi", ".sdf": "sdf"}
            if suffix not in kinds:
                raise OutputError(f"{self.path}: output must end in .csv, .smi or .sdf")
            self.kind = kinds[suffix]
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sdf_rows: list[tuple[str | None, dict[str, Any]]] = []
        if self.kind == "sdf":
            self.fh = None
            return
        self.fh = (self.path.open("w", newline="") if self.path else sys.stdout)
        if self.kind == "csv":
            self.writer = csv.DictWriter(self.fh, fieldnames=self.columns, extrasaction="ignore")
            self.writer.writeheader()
        else:  # .smi: SMILES first, then the other columns, tab-separated, with a header
            self.fh.write("\t".join(self.columns) + "\n")

    def write_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if self.kind == "csv":
                self.writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
            elif self.kind == "smi":
                self.fh.write("\t".join("" if row.get(c) is None else str(row.get(c))
                                        for c in self.columns) + "\n")
            else:
                self._sdf_rows.append((row.get("smiles"), {k: row.get(k) for k in self.columns
                                                           if k != "smiles"}))

    def close(self) -> None:
        if self.kind == "sdf" and self.path is not None:
            chem.write_sdf(str(self.path), self._sdf_rows)
        elif self.fh is not None and self.fh is not sys.stdout:
            self.fh.close()
        elif self.fh is sys.stdout:
            self.fh.flush()
