"""Read molecule files: SMILES (.smi/.txt), CSV/TSV and SD files, gzipped or not.

Every row comes back, in order, with a status instead of an exception (a blank line is
``empty``, an unparsable record ``invalid``), its line number and its ID, so that nothing a
user gave is silently dropped; :mod:`molvae.data` tokenizes what is read here.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import chem, sdf

__all__ = ["DataFileError", "RawMolecules", "read_molecules", "file_sha256"]

SMILES_COLUMNS = ("smiles", "canonical_smiles", "smiles_string", "smi", "molecule", "mol")
ID_COLUMNS = ("id", "name", "title", "compound", "compound_id", "mol_id", "chembl_id")
EMPTY = "empty"  # status of a row without a molecule: blank line, comment, empty cell


class DataFileError(ValueError):
    """A data file is missing, of an unknown format, or lacks its SMILES column."""


# ------------------------------------------------------------------------------------- reading
def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace")
    return path.open("r", encoding="utf-8-sig", errors="replace")


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".smi", ".smiles", ".txt"):
        return "smi"
    if ext in (".csv", ".tsv"):
        return ext[1:]
    if ext in (".sdf", ".sd", ".mol"):
        return "sdf"
    raise DataFileError(
        f"{path}: unknown file type {''.join(path.suffixes) or '(none)'}; "
        "expected .smi, .csv, .tsv or .sdf, optionally gzipped")


@dataclass
class RawMolecules:
    """Rows as read from a file: one per record, in file order, none dropped.

    A record is a line of a .smi file (a header line aside), a data row of a CSV/TSV file
    (blank lines included), or an SDF record. Per row ``i``:

    - ``texts[i]``: the SMILES, or None where the row holds none (blank line, comment,
      empty cell, unparsable SDF record);
    - ``lines[i]``: the 1-based line number (.smi, .csv) or record number (SDF);
    - ``ids[i]``: the record's identifier, "" where it has none;
    - ``extra[i]``: its pass-through values, keyed by ``columns`` (file order; "" if missing).

    Rows that fail before any chemistry are in ``errors`` (position -> reason) and
    ``statuses`` (position -> ``empty`` or ``invalid``); :meth:`problem` gives both.
    ``read_molecules(..., pass_through=False)`` leaves ``ids``, ``columns`` and ``extra`` empty.
    """

    texts: list[str | None]
    lines: list[int]
    errors: dict[int, str] = field(default_factory=dict)  # position -> reason
    ids: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    extra: list[dict[str, str]] = field(default_factory=list)
    statuses: dict[int, str] = field(default_factory=dict)  # position -> status, for errors

    def __len__(self) -> int:
        return len(self.texts)

    def problem(self, i: int) -> tuple[str, str] | None:
        """``(status, reason)`` of a row that failed before chemistry (status ``empty`` or
        ``invalid``), or None for a row whose SMILES is still to be checked."""
        if i not in self.errors:
            return None
        return self.statuses.get(i, chem.INVALID), self.errors[i]

    def _add(self, line: int, text: str | None, ident: str | None = None,
             extra: dict[str, str] | None = None, problem: tuple[str, str] | None = None
             ) -> None:
        if problem is not None:
            self.statuses[len(self.texts)], self.errors[len(self.texts)] = problem
        self.texts.append(text)
        self.lines.append(line)
        if ident is not None:
            self.ids.append(ident)
        if extra is not None:
            self.extra.append(extra)


def read_molecules(path: str | Path, smiles_column: str | None = None,
                   id_column: str | None = None, *, pass_through: bool = True) -> RawMolecules:
    """Read .smi/.csv/.tsv/.sdf (optionally .gz): one row per record, see :class:`RawMolecules`.

    Args:
        path: the file; its suffix gives the format.
        smiles_column: CSV/TSV column holding SMILES (default: detected by name).
        id_column: CSV/TSV column, or SD property, holding the record's identifier (default:
            a CSV column named like ``id``/``name``/``compound_id``, the SDF title, the
            .smi name).
        pass_through: also keep ids and the other columns (off for training, where a large
            file's other columns would only cost memory).

    Raises:
        DataFileError: the file is missing, unreadable, of an unknown type, or lacks a
            column that was asked for; the message names what is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory, expected a molecule file")
    kind = _kind(path)
    try:
        if kind == "sdf":
            return _read_sdf(path, id_column, pass_through)
        if kind == "smi":
            return _read_smi(path, pass_through)
        return _read_csv(path, smiles_column, id_column, pass_through,
                         delimiter="\t" if kind == "tsv" else ",")
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{path}: cannot read: {exc}") from None


def _smi_fields(line: str) -> tuple[str, str, tuple[str, str] | None]:
    """One .smi line as (SMILES, name, problem): the SMILES is the first field, the name the
    rest of the line (Daylight style). A line starting with a tab has an empty SMILES field
    (that is how :class:`molvae.io.TableWriter` writes a row without a molecule)."""
    if line.startswith("\t"):
        name = line.strip()
        return "", name, (EMPTY, "empty SMILES field" if name else "blank line")
    text = line.strip()
    if not text:
        return "", "", (EMPTY, "blank line")
    if text.startswith("#"):
        return "", "", (EMPTY, "comment line")
    parts = text.split(None, 1)
    return parts[0], (parts[1] if len(parts) > 1 else ""), None


def _read_smi(path: Path, keep: bool) -> RawMolecules:
    raw = RawMolecules([], [], columns=["name"] if keep else [])
    started = False  # a header may only come before the first record with content
    with _open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            smiles, name, problem = _smi_fields(line)
            if not started and smiles.lower() in SMILES_COLUMNS:
                started = True
                continue  # header line
            started = started or bool(smiles or name)
            raw._add(n, smiles or None, name if keep else None,
                     {"name": name} if keep else None, problem)
    return raw


def _column_index(path: Path, names: list[str], asked: str | None, option: str,
                  known: Sequence[str]) -> int | None:
    """The column ``asked`` for (DataFileError if absent), else the first of ``known`` (any
    case), else None."""
    if asked is not None:
        if asked not in names:
            raise DataFileError(
                f"{path}: no column {asked!r} ({option}); columns are {', '.join(names)}")
        return names.index(asked)
    lower = [h.lower() for h in names]
    return next((lower.index(c) for c in known if c in lower), None)


def _unique_names(names: list[str]) -> list[str]:
    """Column names usable as keys: unnamed ones become ``column<N>``, repeats get ``_2``..."""
    out: list[str] = []
    for j, name in enumerate(names):
        base = name or f"column{j + 1}"
        unique, k = base, 1
        while unique in out:
            k += 1
            unique = f"{base}_{k}"
        out.append(unique)
    return out


def _csv_problem(row: list[str], col: int, width: int) -> tuple[str, str]:
    if not any(cell.strip() for cell in row):
        return EMPTY, "blank line"
    if col >= len(row):
        return EMPTY, f"no SMILES cell (the row has {len(row)} of {width} cells)"
    return EMPTY, "empty SMILES cell"


def _read_csv(path: Path, smiles_column: str | None, id_column: str | None, keep: bool,
              delimiter: str) -> RawMolecules:
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataFileError(f"{path}: empty file, expected a header row")
        names = [h.strip() for h in header]
        col = _column_index(path, names, smiles_column, "--smiles-column", SMILES_COLUMNS)
        if col is None:
            raise DataFileError(
                f"{path}: no SMILES column found among {', '.join(names)}; "
                "name it with --smiles-column")
        id_col = _column_index(path, names, id_column, "--id-column", ID_COLUMNS)
        keys = _unique_names(names)
        others = [j for j in range(len(names)) if j != col]
        raw = RawMolecules([], [], columns=[keys[j] for j in others] if keep else [])
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num  # a quoted cell may span several lines
            text = row[col].strip() if col < len(row) else ""
            problem = None if text else _csv_problem(row, col, len(names))
            ident = extra = None
            if keep:
                ident = row[id_col].strip() if id_col is not None and id_col < len(row) else ""
                extra = {keys[j]: (row[j] if j < len(row) else "") for j in others}
            raw._add(start, text or None, ident, extra, problem)
    return raw


def _read_sdf(path: Path, id_column: str | None, keep: bool) -> RawMolecules:
    opener = gzip.open if path.suffix == ".gz" else open
    raw = RawMolecules([], [])
    records: list[tuple[str, dict[str, str]]] = []
    props: dict[str, None] = {}  # every property name, in order of first appearance
    with opener(path, "rb") as fh:
        for n, rec in enumerate(sdf.iter_sdf(fh), 1):
            problem = None if rec.status == chem.OK else (rec.status, rec.reason)
            raw._add(n, rec.smiles, problem=problem)
            props.update(dict.fromkeys(rec.props))
            if keep:
                records.append((rec.title, rec.props))
    if id_column is not None and id_column not in props and id_column != "title":
        raise DataFileError(f"{path}: no SD property {id_column!r} (--id-column); properties "
                            f"are {', '.join(props) or '(none)'}")
    if keep:
        raw.columns = ["title", *(p for p in props if p != "title")]
        for title, values in records:
            raw.extra.append({"title": title, **{p: values.get(p, "") for p in raw.columns[1:]}})
            raw.ids.append(title if id_column in (None, "title") else values.get(id_column, ""))
    return raw


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
