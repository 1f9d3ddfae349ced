"""Measure a checkpoint's domain record (molvae.domain.compute) and store it in the file.

The training side (elements, charges, heavy-atom and SELFIES-length ranges) comes from a seeded
subset of the training molecules standardized as the model standardizes its inputs; elements
and charges are also scanned from the text of every training SMILES (a regex, no RDKit), so an
element too rare to land in the subset is still seen. The test side is the distribution of
-ELBO per SELFIES token over seeded test molecules. Only the checkpoint's JSON metadata is
rewritten: the script checks that the tensor bytes and their sha256 did not change.

Prints the record as JSON and a short markdown table.

    python scripts/fit_domain.py                      # the bundled model, MOSES train / test
    python scripts/fit_domain.py --n-train 500 --n-test 500 --dry-run   # time it first
    python scripts/fit_domain.py runs/x/best.safetensors --train train.csv --test test.csv
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from benchmark_moses import cpu_name  # scripts/ is on sys.path when run as a script

from molvae import checkpoint, domain
from molvae.metrics import load_moses
from molvae.moses_files import MOSES_DIR
from molvae.pretrained import default_model_path
from molvae.readers import file_sha256, read_molecules


def molecules(path: str | None, split: str) -> tuple[list[str], dict[str, str]]:
    """SMILES of a file, or of the MOSES split when no file is given; with where they came
    from."""
    if path is None:
        source = MOSES_DIR / f"{split}.csv.gz"
        return load_moses(split), {"file": f"data/moses/{source.name}",
                                   "sha256": file_sha256(source)}
    raw = read_molecules(path, pass_through=False)
    return [t for t in raw.texts if t], {"file": str(path), "sha256": file_sha256(path)}


def _tensor_bytes(path: Path) -> tuple[str, str]:
    """(stored tensor sha256, sha256 of the raw tensor section) of a safetensors file."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    stored = json.loads(blob[8: 8 + n])["__metadata__"]["sha256"]
    return stored, hashlib.sha256(blob[8 + n:]).hexdigest()


def table(record: dict) -> str:
    train, test = record["train"], record["test"]
    ha, sl = train["heavy_atoms"], train["selfies_length"]
    dist = test["neg_elbo_per_token"]
    q = dict(zip(dist["levels"], dist["values"]))
    rows = [
        ("elements (training molecules containing each)",
         ", ".join(f"{k} {v:,}" for k, v in train["elements"].items())),
        ("elements in the text of all training rows",
         ", ".join(train["scan"]["elements"]) + f" ({train['scan']['n']:,} rows)"),
        ("formal charges", ", ".join(train["charges"]) or "none"),
        ("vocabulary: elements / charges / stereo symbols",
         f"{', '.join(record['vocab']['elements'])} / "
         f"{', '.join(record['vocab']['charges']) or 'none'} / "
         f"{'yes' if record['vocab']['stereo_tokens'] else 'no'}"),
        ("heavy atoms min / p0.5 / p50 / p99.5 / max",
         f"{ha['min']} / {ha['p0.5']:g} / {ha['p50']:g} / {ha['p99.5']:g} / {ha['max']}"),
        ("SELFIES symbols min / p0.5 / p50 / p99.5 / max",
         f"{sl['min']} / {sl['p0.5']:g} / {sl['p50']:g} / {sl['p99.5']:g} / {sl['max']}"),
        ("-ELBO per token p1 / p50 / p99 / p99.9 / max",
         f"{q[1.0]:.3f} / {q[50.0]:.3f} / {q[99.0]:.3f} / {q[99.9]:.3f} / {q[100.0]:.3f}"),
        ("molecules used", f"train {train['n_ok']:,} of {train['n']:,} drawn "
         f"({train['n_given']:,} given); test {test['n_ok']:,} of {test['n']:,}"),
    ]
    return "\n".join(["| quantity | value |", "|---|---|"]
                     + [f"| {a} | {b} |" for a, b in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", help="checkpoint file (default: the bundled one)")
    ap.add_argument("--train", help="training molecules (default: MOSES train)")
    ap.add_argument("--test", help="test molecules (default: MOSES test)")
    ap.add_argument("--n-train", type=int, default=200_000,
                    help="training molecules standardized for the ranges (default 200000)")
    ap.add_argument("--n-test", type=int, default=10_000,
                    help="test molecules for the -ELBO distribution (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-samples", type=int, default=8, help="posterior samples per ELBO")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--dry-run", action="store_true", help="measure, but leave the file alone")
    ap.add_argument("--json", help="also write the record to this file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    path = Path(args.checkpoint) if args.checkpoint else default_model_path()
    if args.checkpoint and (args.train is None or args.test is None):
        print("fit_domain: give --train and --test for a checkpoint other than the bundled one "
              "(MOSES is only the bundled model's data)", file=sys.stderr)
        return 2
    model = checkpoint.load(path)
    start = time.perf_counter()
    train, train_src = molecules(args.train, "train")
    test, test_src = molecules(args.test, "test")
    moses = args.train is None
    record = domain.compute(model, train, test, n_train=args.n_train, n_test=args.n_test,
                            seed=args.seed, n_samples=args.n_samples,
                            train_name="MOSES train" if moses else Path(args.train).name,
                            test_name="MOSES test" if args.test is None else
                            Path(args.test).name)
    seconds = time.perf_counter() - start
    command = "python scripts/fit_domain.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    record["fit"] = {
        "command": command, "seconds": round(seconds, 1), "train_source": train_src,
        "test_source": test_src,
        "hardware": {"cpu": cpu_name(), "cores": os.cpu_count(),
                     "torch_threads": torch.get_num_threads()},
        "versions": checkpoint.versions()}

    if not args.dry_run:
        before = _tensor_bytes(path)
        checkpoint.set_domain(path, record)
        after = _tensor_bytes(path)
        if before != after:
            raise SystemExit(f"{path}: the tensors changed while writing the metadata")
        loaded = checkpoint.load(path)  # verifies the stored sha256 against the tensors
        if json.loads(json.dumps(record)) != loaded.domain:
            raise SystemExit(f"{path}: the stored domain record does not read back")
        check = (f"tensors unchanged: stored sha256 {after[0][:16]}..., sha256 of the tensor "
                 f"bytes {after[1][:16]}... (before and after), file loads and verifies")
    text = json.dumps(record, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    print()
    print(table(record))
    if not args.dry_run:
        print("\n" + check)
    print(f"\n{seconds:.0f} s on {record['fit']['hardware']['cpu']}, "
          f"{args.threads} torch thread(s); " + ("dry run, file unchanged" if args.dry_run
                                                 else f"written to {path}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
