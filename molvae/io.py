"""Writing result tables: CSV, SMILES, SDF by suffix, or CSV on stdout. Every row is kept.

Row i of what is written is row i given, in every format, so a table lines up with its input
file (and a ``.npy`` array with its :func:`write_status_table` companion).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import sdf

__all__ = ["TableWriter", "OutputError", "write_status_table", "status_table_path",
           "STATUS_COLUMNS"]

STATUS_COLUMNS = ("line", "id", "input", "status", "reason")
_NUMBER_COLUMNS = ("index", "line", "step")  # a row's fallback name in .smi output


class OutputError(ValueError):
    """An output file name with an unsupported suffix."""


def _one_line(value: Any) -> str:
    """A value on one line: None -> "", whitespace runs (tabs, newlines) -> one space."""
    return "" if value is None else " ".join(str(value).split())


class TableWriter:
    """Streams rows (dicts) to .csv, .smi, .sdf, or CSV on stdout, one output row per row.

    The molecule of a row is its ``smiles`` value (``input`` where the columns have no
    ``smiles``); None or "" means the row has none. Per format:

    - CSV: a header, then every row; ``\\n`` line endings; None is written as "".
    - .smi: the standard ``SMILES<TAB>name`` per row, no header. The name is the row's
      ``id``, else its ``name``, else the first of its ``index``/``line``/``step`` columns,
      else nothing (the line is just the SMILES). A row without a molecule is written with an
      empty SMILES field, ``<TAB>name``, so line i is still row i: :func:`molvae.readers.
      read_molecules` reads such a line back as a row with status ``empty`` and its name
      (RDKit's SmilesMolSupplier as an unparsable record).
    - .sdf: one record per row, titled with the row's ``id``/``name`` (else ``#<n>``, n the
      1-based record number), carrying the SMILES as the ``SMILES`` property and every other
      column as a property; a row without a molecule is a record without atoms.
    """

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
        self.smiles_key = ("input" if "input" in self.columns and "smiles" not in self.columns
                           else "smiles")
        self._number_key = next((c for c in self.columns if c in _NUMBER_COLUMNS), None)
        self._sdf_rows: list[tuple[str | None, dict[str, Any]]] = []
        self._sdf_titles: list[str] = []
        if self.kind == "sdf":
            self.fh = None
            return
        self.fh = (self.path.open("w", newline="", encoding="utf-8") if self.path
                   else sys.stdout)
        if self.kind == "csv":
            self.writer = csv.DictWriter(self.fh, fieldnames=self.columns, extrasaction="ignore",
                                         lineterminator="\n")
            self.writer.writeheader()

    def _smiles(self, row: dict[str, Any]) -> str:
        return _one_line(row.get(self.smiles_key))

    def _name(self, row: dict[str, Any]) -> str:
        """The row's id, else its name, else its index/line/step number, else ""."""
        for key in ("id", "name"):
            name = _one_line(row.get(key))
            if name:
                return name
        return _one_line(row.get(self._number_key)) if self._number_key else ""

    def write_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if self.kind == "csv":
                self.writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
            elif self.kind == "smi":
                name = self._name(row)
                self.fh.write(self._smiles(row) + ("\t" + name if name else "") + "\n")
            else:
                title = _one_line(row.get("id")) or _one_line(row.get("name"))
                self._sdf_titles.append(title or f"#{len(self._sdf_titles) + 1}")
                props = {"SMILES": self._smiles(row)}
                props.update((k, row.get(k)) for k in self.columns if k != "smiles")
                self._sdf_rows.append((row.get(self.smiles_key) or None, props))

    def close(self) -> None:
        if self.kind == "sdf" and self.path is not None:
            sdf.write_sdf(str(self.path), self._sdf_rows, titles=self._sdf_titles)
        elif self.fh is not None and self.fh is not sys.stdout:
            self.fh.close()
        elif self.fh is sys.stdout:
            self.fh.flush()


def status_table_path(npy_path: str | Path) -> Path:
    """The status table beside an array file: ``z.npy`` -> ``z.status.csv``."""
    return Path(npy_path).with_suffix(".status.csv")


def write_status_table(npy_path: str | Path, rows: Sequence[dict[str, Any]],
                       columns: Sequence[str] | None = None) -> Path:
    """Write the CSV companion of a ``.npy`` array: row i of the table describes row i of the
    array (which input line, its id, the input, status and reason).

    Args:
        npy_path: the array file; the table goes beside it (:func:`status_table_path`).
        rows: one dict per array row, in order.
        columns: the table's columns (default: every key of ``rows`` in order of first
            appearance, or :data:`STATUS_COLUMNS` when there are no rows).

    Returns:
        The path of the table.
    """
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen) or list(STATUS_COLUMNS)
    path = status_table_path(npy_path)
    writer = TableWriter(path, columns)
    try:
        writer.write_rows(rows)
    finally:
        writer.close()
    return path


def flag_text(flag: bool | None) -> str:
    """A yes/no flag in a table cell (e.g. grammar consistency); empty for None (not
    applicable, such as an input molecule that was not decoded)."""
    return "" if flag is None else ("yes" if flag else "no")
