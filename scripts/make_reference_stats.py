"""Make the reference statistics of the MOSES splits that ship in molvae/reference/.

`molvae.metrics.evaluate` with its default references reads these files instead of computing
the statistics of 2 x 176k test molecules (ChemNet, fingerprints, fragments, scaffolds,
properties) and canonicalizing 1.58M training SMILES; so evaluation works from a wheel install
and its first run takes seconds, not an hour. Written:

    test.npz, test_scaffolds.npz   per test set: fcd_mu (512,) and fcd_sigma (512, 512), the
                                   ChemNet activation mean and covariance, float64; fps, the
                                   distinct packed Morgan fingerprints (radius 2, 1024 bits),
                                   uint8 (m, 128), sorted; frag_keys/frag_counts and
                                   scaf_keys/scaf_counts; logP, SA, QED, weight of every valid
                                   molecule in file order, float64
    train_hashes.npy               the sorted uint64 BLAKE2b-64 digests of the distinct canonical
                                   training SMILES (UTF-8), for novelty
    provenance.json                RDKit and other versions, the sha256 and row count of each
                                   source file, array sizes, the definitions version

    python scripts/make_reference_stats.py                   # data/moses -> molvae/reference
    python scripts/make_reference_stats.py --cache-dir /tmp/c --n-jobs 2

The statistics go through metrics.reference_statistics and its disk cache (--cache-dir, default
the usual ~/.cache/molvae/metrics), so files an earlier evaluate cached are reused; from
nothing it takes about an hour on two CPU cores, mostly ChemNet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import rdkit

from molvae import metrics
from molvae._features import (
    _CACHE_VERSION,
    FP_BITS,
    FP_RADIUS,
    Stats,
    _canonical_set,
    _smiles_hashes,
    _unique_rows,
)

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("test", "test_scaffolds")


def split_stats(
    smiles: list[str],
    *,
    n_jobs: int | None = 1,
    device: str = "cpu",
    batch_size: int = 512,
    progress: bool = False,
    cache_dir: str | Path | bool | None = None,
) -> Stats:
    """The arrays evaluate() needs of one reference set (see the module docstring)."""
    stats = metrics.reference_statistics(
        smiles,
        fcd=True,
        n_jobs=n_jobs,
        device=device,
        batch_size=batch_size,
        progress=progress,
        cache_dir=cache_dir,
    )
    if "fcd_mu" not in stats:
        raise ValueError("a reference set needs at least two valid molecules")
    out = {k: np.asarray(stats[k], dtype=np.float64) for k in ("fcd_mu", "fcd_sigma")}
    out["fps"] = _unique_rows(stats["fps"])[0]  # SNN looks only at distinct fingerprints
    for k in ("frag_keys", "frag_counts", "scaf_keys", "scaf_counts"):
        out[k] = stats[k]
    for k in metrics.PROPERTY_NAMES:
        out[k] = np.asarray(stats[k], dtype=np.float64)
    out["n_valid"] = np.array(len(stats["smiles"]), dtype=np.int64)
    return out


def train_hashes(
    smiles: list[str],
    *,
    n_jobs: int | None = 1,
    progress: bool = False,
    cache_dir: str | Path | bool | None = None,
) -> np.ndarray:
    """Sorted distinct uint64 digests of the canonical training SMILES."""
    return np.unique(_smiles_hashes(_canonical_set(smiles, n_jobs, progress, cache_dir)))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def build(
    moses_dir: str | Path,
    out: str | Path,
    *,
    splits: tuple[str, ...] = (*SPLITS, "train"),
    n_jobs: int | None = 1,
    device: str = "cpu",
    batch_size: int = 512,
    progress: bool = False,
    cache_dir: str | Path | bool | None = None,
) -> dict:
    """Writes the files of `splits` into `out` and returns the provenance record written."""
    moses_dir, out = Path(moses_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {
        "format": 1,
        "made_by": "scripts/make_reference_stats.py",
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rdkit": rdkit.__version__,
        "versions": {name: _version(name) for name in ("molvae", "numpy", "torch", "fcd_torch")},
        "python": platform.python_version(),
        "definitions": _CACHE_VERSION,
        "fingerprint": {"kind": "Morgan", "radius": FP_RADIUS, "bits": FP_BITS},
        "fcd_dtype": "float64",
        "files": {},
    }
    for split in splits:
        source = moses_dir / f"{split}.csv.gz"
        smiles = metrics.load_moses(split, moses_dir)
        entry = {"source": source.name, "sha256": sha256_file(source), "rows": len(smiles)}
        started = time.perf_counter()
        if split == "train":
            hashes = train_hashes(smiles, n_jobs=n_jobs, progress=progress, cache_dir=cache_dir)
            name = "train_hashes.npy"
            np.save(out / name, hashes)
            entry.update(
                hash="blake2b digest_size=8 of the UTF-8 canonical SMILES, little-endian uint64",
                distinct=len(hashes),
                false_match_probability_per_sample=len(hashes) / 2.0**64,
            )
        else:
            stats = split_stats(
                smiles,
                n_jobs=n_jobs,
                device=device,
                batch_size=batch_size,
                progress=progress,
                cache_dir=cache_dir,
            )
            name = f"{split}.npz"
            np.savez_compressed(out / name, **stats)
            entry.update(
                valid=int(stats["n_valid"]),
                distinct_fingerprints=len(stats["fps"]),
                fragments=len(stats["frag_keys"]),
                scaffolds=len(stats["scaf_keys"]),
            )
        entry["bytes"] = (out / name).stat().st_size
        entry["seconds"] = round(time.perf_counter() - started, 1)
        record["files"][name] = entry
        print(f"{name}: {entry['bytes'] / 1e6:.1f} MB in {entry['seconds']} s", file=sys.stderr)
    path = out / "provenance.json"
    if path.is_file():  # a partial rebuild keeps the entries of the files it did not touch
        old = json.loads(path.read_text())
        record["files"] = {**old.get("files", {}), **record["files"]}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moses-dir", default=str(ROOT / "data" / "moses"),
                    help="folder of test.csv.gz, test_scaffolds.csv.gz, train.csv.gz")
    ap.add_argument("--out", default=str(ROOT / "molvae" / "reference"), help="output folder")
    ap.add_argument("--splits", nargs="+", default=[*SPLITS, "train"],
                    choices=[*SPLITS, "train"], help="which files to (re)make")
    ap.add_argument("--n-jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--device", default="cpu", help="torch device for ChemNet")
    ap.add_argument("--batch-size", type=int, default=512, help="ChemNet batch size")
    ap.add_argument("--cache-dir", default=None,
                    help="metrics cache folder (default: ~/.cache/molvae/metrics; 'none': off)")
    args = ap.parse_args(argv)
    cache = False if args.cache_dir == "none" else args.cache_dir
    record = build(args.moses_dir, args.out, splits=tuple(args.splits), n_jobs=args.n_jobs,
                   device=args.device, batch_size=args.batch_size, progress=True,
                   cache_dir=cache)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
