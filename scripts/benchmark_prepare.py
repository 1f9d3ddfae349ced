"""Does standardizing inputs on a process pool pay? ``prepare_inputs`` (what encode,
reconstruct, fit-prior and optimize starts run first) in this process against
:func:`molvae.parallel.pmap` on worker processes, in the same run, on the same molecules.

For each input size the two take turns ``--repeats`` times and the median wall time is
reported, with the speed-up (in-process time / pooled time) and whether the outputs are
identical. The molecules are a seeded random subset of MOSES test (the files are not shuffled).
The pool's start-up is part of each pooled call, as it is for a user. Below
``molvae.parallel.MIN_PARALLEL`` inputs ``prepare_inputs`` stays in this process either way
(the table says so); sizes around it show whether that threshold is right. Prints a JSON object and
a markdown table.

    python scripts/benchmark_prepare.py                       # 500, 2,000, 10,000 molecules
    python scripts/benchmark_prepare.py --sizes 1000 5000 --jobs 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from benchmark_moses import hardware  # scripts/ is on sys.path when run as a script

import molvae
from molvae.generate import prepare_inputs
from molvae.metrics import load_moses
from molvae.parallel import MIN_PARALLEL, n_jobs


def time_both(model: molvae.Model, mols: list[str], jobs: int, repeats: int) -> dict:
    """Median seconds of in-process and pooled standardization of ``mols``, alternated."""
    times: dict[str, list[float]] = {"in_process": [], "pool": []}
    outs = {}
    for _ in range(repeats):
        for name, j in (("in_process", 1), ("pool", jobs)):
            t = time.perf_counter()
            # jobs=1 keeps it in this process whatever the size
            outs[name] = prepare_inputs(model, mols, jobs=j)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    same = (outs["in_process"].ids == outs["pool"].ids
            and outs["in_process"].smiles == outs["pool"].smiles)
    return {"molecules": len(mols), "in_process_s": med["in_process"], "pool_s": med["pool"],
            "speedup": med["in_process"] / med["pool"], "identical": same,
            # below pmap's threshold prepare_inputs stays in this process even when asked
            "pooled": len(mols) >= MIN_PARALLEL}


def table(res: dict) -> str:
    lines = [f"| molecules | in process (s) | pool, {res['jobs']} workers (s) | speed-up "
             "| identical |", "|---|---|---|---|---|"]
    for r in res["sizes"]:
        pool = f"{r['pool_s']:.2f}" + ("" if r["pooled"] else " (below the threshold: "
                                        "in process)")
        lines.append(f"| {r['molecules']:,} | {r['in_process_s']:.2f} | {pool} "
                     f"| {r['speedup']:.2f}x | {'yes' if r['identical'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: bundled)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2_000, 10_000])
    ap.add_argument("--jobs", type=int, default=0, help="pool workers (0: every core)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the JSON object here")
    args = ap.parse_args()
    model = molvae.load(args.model)
    test = load_moses("test")
    pick = np.random.default_rng(args.seed).choice(len(test), max(args.sizes), replace=False)
    mols = [test[i] for i in pick]
    jobs = n_jobs(args.jobs or None)
    res = {"hardware": {**hardware("cpu"), "load_average_1min_start": os.getloadavg()[0]},
           "model": Path(model.path).name if model.path else None,
           "molecules": "seeded random subset of MOSES test", "seed": args.seed,
           "jobs": jobs, "repeats": args.repeats,
           "sizes": [time_both(model, mols[:n], jobs, args.repeats) for n in args.sizes]}
    print(json.dumps(res, indent=2))
    print(table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
