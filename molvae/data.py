"""Read molecule files, tokenize in parallel, cache token arrays, and batch by length.

Token data is kept as one flat integer array plus offsets (no Python object per molecule), so
the 1.6M-molecule MOSES train set costs tens of megabytes.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import chem, parallel, sdf
from ._version import package_version
from .vocab import EOS, PAD, Vocab, symbols_of

__all__ = [
    "DataFileError",
    "read_molecules",
    "TokenData",
    "tokenize",
    "load_dataset",
    "split_indices",
    "BucketBatcher",
    "collate",
    "file_sha256",
    "write_rejects",
    "pad_ids",
    "default_cache_dir",
]

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # 2: rows without a molecule (blank lines...) are rejects
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


# ---------------------------------------------------------------------------------- tokenizing
@dataclass
class TokenData:
    """Tokenized molecules: ids of molecule i are tokens[offsets[i]:offsets[i+1]] (no bos/eos)."""

    tokens: np.ndarray  # (T,) uint8/uint16
    offsets: np.ndarray  # (N+1,) int64
    lines: np.ndarray  # (N,) int64: line or record number in the source file
    vocab: Vocab
    # rejects: (line, text, status, reason)
    rejects: list[tuple[int, str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]: self.offsets[i + 1]]

    def selfies(self, i: int) -> str:
        return self.vocab.decode(self.ids(i))

    def subset(self, idx: np.ndarray) -> TokenData:
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.lengths[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        starts = self.offsets[idx]
        # gather all rows at once: position p of row r reads tokens[starts[r] + p]
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return TokenData(self.tokens[gather], offsets, self.lines[idx], self.vocab, [])

    def with_vocab(self, vocab: Vocab) -> TokenData:
        """Re-express in another vocabulary; molecules with symbols it lacks become rejects."""
        if vocab.symbols == self.vocab.symbols:
            return TokenData(self.tokens, self.offsets, self.lines, vocab, list(self.rejects))
        table = vocab.remap_from(self.vocab)
        mapped = table[self.tokens.astype(np.int64)]
        bad_tok = mapped < 0
        row_of = np.repeat(np.arange(len(self)), self.lengths)
        bad_rows = np.unique(row_of[bad_tok])
        rejects = list(self.rejects)
        for r in bad_rows:
            unknown = sorted({self.vocab.tokens[t] for t in self.ids(r) if table[t] < 0})
            shown = chem.selfies_to_smiles(self.selfies(r)) or self.selfies(r)
            rejects.append((int(self.lines[r]), shown, chem.UNKNOWN_TOKEN,
                            "symbols not in the model vocabulary: " + " ".join(unknown)))
        keep = np.setdiff1d(np.arange(len(self)), bad_rows)
        out = TokenData(mapped.astype(vocab.dtype), self.offsets, self.lines, vocab, [])
        out = out.subset(keep) if len(bad_rows) else out
        out.rejects = sorted(rejects)
        return out


def _prepare_chunk(texts: Sequence[str | None], settings: dict[str, Any]
                   ) -> list[tuple[str, str, str]]:
    out = []
    with chem.constraints(settings["constraints"]):
        for t in texts:
            p = chem.prepare(t, largest_fragment=settings["largest_fragment"],
                             keep_stereo=settings["keep_stereo"])
            out.append((p.selfies or "", p.status, p.reason))
    return out


def tokenize(texts: Sequence[str | None], lines: Sequence[int] | None = None, *,
             vocab: Vocab | None = None, max_len: int = 100, keep_stereo: bool = True,
             largest_fragment: bool = True, num_workers: int = 0, progress: bool = False,
             pre_errors: dict[int, str] | None = None, chunk_size: int = 2000,
             pre_status: dict[int, str] | None = None) -> TokenData:
    """Standardize, SELFIES-encode and map to ids. Bad rows become rejects, never errors.

    With ``vocab=None`` the vocabulary is built from the accepted molecules. ``pre_errors``
    (position -> reason) rejects rows that failed before chemistry, with the status
    ``pre_status`` gives them (default ``invalid``), as :class:`RawMolecules` records them.
    """
    n = len(texts)
    lines = list(range(1, n + 1)) if lines is None else list(lines)
    settings = {"keep_stereo": keep_stereo, "largest_fragment": largest_fragment,
                "constraints": vocab.constraints if vocab else None}
    # the settings travel with each task (a few hundred bytes), so no process-wide state is set,
    # in workers or here
    results: list[tuple[str, str, str]] = parallel.pmap(
        partial(_prepare_chunk, settings=settings), texts, jobs=num_workers,
        chunk_size=chunk_size, min_parallel=2 * chunk_size, progress=progress,
        desc="tokenizing")

    pre_errors = pre_errors or {}
    pre_status = pre_status or {}
    rejects: list[tuple[int, str, str, str]] = []
    ok_sf: list[str] = []
    ok_lines: list[int] = []
    for i, (sf_str, status, reason) in enumerate(results):
        if i in pre_errors:
            status, reason = pre_status.get(i, chem.INVALID), pre_errors[i]
        if status != chem.OK:
            rejects.append((lines[i], "" if texts[i] is None else str(texts[i]), status, reason))
            continue
        ok_sf.append(sf_str)
        ok_lines.append(lines[i])
    if vocab is None:
        vocab = Vocab.build(ok_sf)
    index = {s: i for i, s in enumerate(vocab.tokens)}
    ids_list: list[list[int]] = []
    keep_lines: list[int] = []
    for sf_str, line in zip(ok_sf, ok_lines):
        syms = symbols_of(sf_str)
        if len(syms) > max_len:
            rejects.append((line, chem.selfies_to_smiles(sf_str) or sf_str, chem.TOO_LONG,
                            f"{len(syms)} SELFIES symbols, the model allows {max_len}"))
            continue
        try:
            ids_list.append([index[s] for s in syms])
        except KeyError:
            unknown = " ".join(dict.fromkeys(s for s in syms if s not in index))
            rejects.append((line, chem.selfies_to_smiles(sf_str) or sf_str, chem.UNKNOWN_TOKEN,
                            f"symbols not in the model vocabulary: {unknown}"))
            continue
        keep_lines.append(line)
    lengths = np.fromiter((len(x) for x in ids_list), dtype=np.int64, count=len(ids_list))
    offsets = np.zeros(len(ids_list) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.fromiter((t for x in ids_list for t in x), dtype=vocab.dtype,
                         count=int(offsets[-1]))
    rejects.sort()
    return TokenData(tokens, offsets, np.asarray(keep_lines, dtype=np.int64), vocab, rejects)


# ------------------------------------------------------------------------------------- caching
def default_cache_dir() -> Path:
    env = os.environ.get("MOLVAE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "molvae"


def _cache_key(data_sha: str, settings: dict[str, Any]) -> str:
    import rdkit
    blob = json.dumps({"data": data_sha, "format": CACHE_FORMAT,
                       "selfies": package_version("selfies"), "rdkit": rdkit.__version__,
                       **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _save_cache(path: Path, data: TokenData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    meta = {"vocab": data.vocab.to_dict(), "rejects": data.rejects}
    with open(tmp, "wb") as fh:
        np.savez(fh, tokens=data.tokens, offsets=data.offsets, lines=data.lines,
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    os.replace(tmp, path)


def _load_cache(path: Path) -> TokenData | None:
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            return TokenData(z["tokens"], z["offsets"], z["lines"],
                             Vocab.from_dict(meta["vocab"]),
                             [tuple(r) for r in meta["rejects"]])  # type: ignore[misc]
    except Exception as exc:  # a damaged cache is rebuilt, never trusted
        log.warning("ignoring unreadable token cache %s (%s)", path, exc)
        return None


def load_dataset(path: str | Path, *, vocab: Vocab | None = None, max_len: int = 100,
                 keep_stereo: bool = True, largest_fragment: bool = True,
                 smiles_column: str | None = None, num_workers: int = 0,
                 progress: bool = False, cache_dir: str | Path | None = None,
                 use_cache: bool = True) -> tuple[TokenData, str]:
    """Read and tokenize a file, reusing the on-disk cache while file and settings match.

    Returns the data (in ``vocab`` when given) and the file's sha256 fingerprint.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    sha = file_sha256(path)
    settings = {"max_len": max_len, "keep_stereo": keep_stereo,
                "largest_fragment": largest_fragment, "smiles_column": smiles_column}
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache / "tokens" / f"{_cache_key(sha, settings)}.npz"
    data = _load_cache(cache_file) if use_cache and cache_file.exists() else None
    if data is not None:
        log.info("reusing token cache %s", cache_file)
    else:
        raw = read_molecules(path, smiles_column, pass_through=False)
        if all(t is None for t in raw.texts):
            raise DataFileError(f"{path}: no molecules found")
        data = tokenize(raw.texts, raw.lines, max_len=max_len, keep_stereo=keep_stereo,
                        largest_fragment=largest_fragment, num_workers=num_workers,
                        progress=progress, pre_errors=raw.errors, pre_status=raw.statuses)
        if use_cache:
            try:
                _save_cache(cache_file, data)
            except OSError as exc:
                log.warning("could not write token cache %s (%s)", cache_file, exc)
    if vocab is not None:
        data = data.with_vocab(vocab)
    return data, sha


def write_rejects(path: str | Path, rejects: Sequence[tuple[int, str, str, str]]) -> None:
    """rejects.csv: one ``line,input,status,reason`` row per rejected input row, ``\\n`` endings."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["line", "input", "status", "reason"])
        w.writerows(rejects)


# ------------------------------------------------------------------------------------ batching
def split_indices(n: int, val_fraction: float, val_max: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of n items."""
    n_val = max(1, min(val_max, int(round(n * val_fraction))))
    if n < 2:
        raise DataFileError("need at least 2 valid molecules to split off a validation set")
    n_val = min(n_val, n - 1)
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class BucketBatcher:
    """Seeded, shuffled, length-bucketed batches; fully determined by (seed, epoch).

    Each window of ``bucket_batches`` batches is sorted by length and cut into batches, and
    the batch order is then shuffled, so batches hold molecules of similar length (little
    padding) while every epoch sees a new order.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, bucket_batches: int = 64):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = batch_size * bucket_batches

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(perm), self.window):
            win = perm[start: start + self.window]
            win = win[np.argsort(self.lengths[win], kind="stable")]
            batches.extend(win[i: i + self.batch_size] for i in range(0, len(win),
                                                                      self.batch_size))
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def padding_ratio(self, epoch: int = 0) -> float:
        """Padded tokens per real token (each row also carries its [eos])."""
        real = padded = 0
        for b in self.epoch(epoch):
            lens = self.lengths[b] + 1
            real += int(lens.sum())
            padded += int(lens.max()) * len(b)
        return padded / max(real, 1)


def collate(data: TokenData, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows idx as a (B, Lmax+1) LongTensor of ids + [eos], PAD after, and their lengths.

    The lengths count the symbols only (the encoder reads those); targets include [eos].
    """
    lengths = data.lengths[idx]
    width = int(lengths.max()) + 1 if len(idx) else 1
    out = np.full((len(idx), width), PAD, dtype=np.int64)
    for r, (i, n) in enumerate(zip(idx, lengths)):
        out[r, :n] = data.tokens[data.offsets[i]: data.offsets[i] + n]
        out[r, n] = EOS
    return torch.from_numpy(out), torch.from_numpy(lengths.astype(np.int64))


def pad_ids(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists (symbols only) into the same layout as :func:`collate`."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    width = int(lengths.max()) + 1 if len(rows) else 1
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    for r, ids in enumerate(rows):
        out[r, : len(ids)] = ids
        out[r, len(ids)] = EOS
    return torch.from_numpy(out), torch.from_numpy(lengths)


