"""Checks molvae.metrics against the MOSES "Train" row.

Scores a seeded random sample of the MOSES training set against the full MOSES test and scaffold
test sets and prints the metrics as JSON (stdout) and as a table beside the published Train row
(stderr). MOSES computed that row from the whole training set (1.58M molecules). A 30k sample
gives a somewhat higher FCD (sampling noise in the 512-d ChemNet mean and covariance) and a
somewhat lower Scaf (noisier scaffold counts); SNN, Frag, IntDiv and Filters are means or
near-saturated and should agree closely.

The first run also computes and caches the statistics of both test sets (~176k molecules each;
about 36 min per set on 2 busy CPU cores, mostly ChemNet); later runs read them from the cache
(~/.cache/molvae/metrics by default). Measured on 2 shared CPU cores, N=30000: FCD/Test 0.048,
SNN/Test 0.642, Frag/Test 1.000, Scaf/Test 0.948, IntDiv 0.857, IntDiv2 0.851, Filters 1.0.

Usage:
    python scripts/check_metrics_train_row.py [-n 30000] [--seed 0] [--n-jobs 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from molvae.metrics import evaluate, load_moses

# MOSES README (molecularsets/moses), "Train" row of the metrics table.
MOSES_TRAIN_ROW = {
    "valid": 1.0,
    "unique@1000": 1.0,
    "unique@10000": 1.0,
    "FCD/Test": 0.008,
    "SNN/Test": 0.6419,
    "Frag/Test": 1.0,
    "Scaf/Test": 0.9907,
    "FCD/TestSF": 0.4755,
    "SNN/TestSF": 0.5859,
    "Frag/TestSF": 0.9986,
    "Scaf/TestSF": 0.0,
    "IntDiv": 0.8567,
    "IntDiv2": 0.8508,
    "Filters": 1.0,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30000, help="sample size (default 30000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=None, help="worker processes (all cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=None, help="reference statistics cache folder")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    train = load_moses("train")
    rng = np.random.default_rng(args.seed)
    sample = [train[i] for i in rng.choice(len(train), size=args.n, replace=False)]
    del train
    metrics = evaluate(
        sample,
        test=load_moses("test"),
        test_scaffolds=load_moses("test_scaffolds"),
        train=None,  # novelty of training molecules is 0 by construction
        n_jobs=args.n_jobs,
        device=args.device,
        progress=not args.no_progress,
        cache_dir=args.cache_dir,
    )
    wall = time.perf_counter() - start

    print(
        json.dumps(
            {"n": args.n, "seed": args.seed, "wall_s": round(wall, 1), "metrics": metrics}, indent=2
        )
    )
    width = max(len(k) for k in metrics)
    lines = [f"{'metric':<{width}}  {'molvae':>8}  {'MOSES':>8}"]
    for key, value in metrics.items():
        ref = MOSES_TRAIN_ROW.get(key)
        lines.append(f"{key:<{width}}  {value:>8.4f}  {'' if ref is None else f'{ref:>8.4f}'}")
    print("\n".join(lines), file=sys.stderr)
    print(
        f"\nMOSES Train row: whole train set (1.58M); here a {args.n} sample, so expect a "
        f"somewhat higher FCD. Wall time {wall:.0f} s.",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
