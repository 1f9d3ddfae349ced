"""Tokenize molecules in parallel, cache token arrays, and batch by length (the files are read
by :mod:`molvae.readers`).

Token data is kept as one flat integer array plus offsets (no Python object per molecule), so
the 1.6M-molecule MOSES train set costs tens of megabytes.
"""

from __future__ import annotations

import csv
import hashlib
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

from . import chem, parallel
from ._version import package_version
from .readers import DataFileError, file_sha256, read_molecules
from .vocab import EOS, PAD, Vocab, symbols_of

__all__ = [
    "TokenData",
    "tokenize",
    "load_dataset",
    "split_indices",
    "BucketBatcher",
    "collate",
    "write_rejects",
    "pad_ids",
    "default_cache_dir",
]

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # 2: rows without a molecule (blank lines...) are rejects


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


