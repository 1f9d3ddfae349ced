"""Which training recipe lowers the decoder's error rate? Recipes compared at equal CPU time.

Every recipe continues the bundled model (``molvae train --init``: its weights, a fresh
optimizer) on the same seeded random subset of MOSES train for the same wall time, one torch
thread each, with recipes run ``--parallel`` at a time on otherwise idle cores. The judge is
the last validation row of each run's metrics.csv, which every run computes on the same held-out
molecules and the same 1,000 prior samples z ~ N(0, I) (temperature 1, fixed seed):

* ``prior_consistent``: the grammar-consistent share of those samples (the error rate's
  complement, what ``molvae.sample`` pays for in draws);
* ``prior_fcd``: FCD/Test of the consistent ones (shipped MOSES test statistics);
* ``recon_exact``, ``recon`` and ``kl``: that reconstruction and the posterior are not traded
  away for it.

The ``start`` row is the starting point: one step at a learning rate of 1e-12, then the same
validation (the bundled weights, measured like the others).

    python scripts/compare_recipes.py --minutes 15 --out molvae/pretrained/recipes
    python scripts/compare_recipes.py --minutes 1 --molecules 5000 --recipes teacher  # quick
    python scripts/compare_recipes.py --recipes dec_1x512 dec_2x512 --minutes 40 \\
        --runs runs/decoder_size --out molvae/pretrained/decoder_size   # from scratch

The ``dec_*`` recipes train from random weights instead (decoder depth can only be compared
that way), at equal wall time, so the deeper decoder gets fewer steps.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import molvae

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "data" / "moses" / "train.csv.gz"

# every recipe continues at a small constant learning rate with the KL weight at its final
# value from the first step (no warm-up: the model is already trained)
COMMON = ["--lr", "1e-4", "--lr-schedule", "constant", "--lr-final", "0", "--kl-schedule",
          "constant"]
RECIPES = {
    "start": ["--max-steps", "1", "--lr", "1e-12", "--lr-schedule", "constant", "--lr-final",
              "0", "--kl-schedule", "constant"],
    "teacher": [],  # the bundled recipe: teacher forcing only
    "gumbel": ["--gumbel-frac-start", "0.5", "--gumbel-frac-end", "0.5", "--tau-start", "0.5",
               "--tau-end", "0.5"],  # half the batches free-running, straight-through
    "free_bits_0.3": ["--free-bits", "0.3"],  # more KL pressure: posteriors nearer N(0, I)
    "free_bits_0.45": ["--free-bits", "0.45"],
    "beta_2": ["--beta", "2"],
}
# decoder size can only be compared from random weights: these recipes train from scratch
# (the moses recipe at a constant learning rate, the KL warm-up shortened to fit a short
# budget), differing only in the decoder's depth
SCRATCH_COMMON = ["--config", "moses", "--lr-schedule", "constant", "--kl-warmup-steps", "500"]
SCRATCH = {
    "dec_1x512": ["--dec-layers", "1"],
    "dec_2x512": ["--dec-layers", "2"],
    "dec_3x512": ["--dec-layers", "3"],
}
KEYS = ("step", "prior_consistent", "prior_fcd", "recon_exact", "recon", "kl", "token_acc",
        "active_units", "elapsed_s")


def subset(path: Path, n: int, seed: int) -> Path:
    """n random molecules of MOSES train (seeded) as a CSV next to the runs; n = 0: all of
    MOSES train, the file itself."""
    if n == 0:
        return TRAIN
    if path.exists():
        return path
    with gzip.open(TRAIN, "rt") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    col = header.index("SMILES") if "SMILES" in header else 0
    pick = np.random.default_rng(seed).choice(len(body), n, replace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("SMILES\n" + "".join(body[i][col] + "\n" for i in sorted(pick)))
    return path


def command(name: str, data: Path, out: Path, minutes: float, val_every: int,
            init: str) -> list[str]:
    base = [sys.executable, "-m", "molvae", "-q", "train", str(data), "--out", str(out),
            "--seed", "0", "--threads", "1", "--val-every", str(val_every),
            "--val-fcd", "true", "--checkpoint-every", str(val_every)]
    if name in SCRATCH:
        return base + SCRATCH_COMMON + ["--max-time", f"{minutes}m"] + SCRATCH[name]
    base += ["--init", init]
    if name == "start":
        return base + RECIPES["start"]
    return base + COMMON + ["--max-time", f"{minutes}m"] + RECIPES[name]


def recipe_args(name: str) -> list[str]:
    """The training flags that make recipe ``name`` (beyond the shared ones)."""
    return RECIPES[name] if name in RECIPES else SCRATCH_COMMON + SCRATCH[name]


def val_rows(out: Path) -> list[dict]:
    """Every validation row of a run's metrics.csv, the KEYS columns as floats."""
    rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if r["split"] == "val"]
    return [{k: float(r[k]) for k in KEYS if r.get(k)} for r in rows]


def last_val(out: Path) -> dict:
    rows = val_rows(out)
    return rows[-1] if rows else {}


def at_common_step(runs: dict[str, list[dict]]) -> tuple[int, dict[str, dict]] | None:
    """The largest validation step every run reached, and each run's row there: the runs
    compared per step rather than per minute (None when they share no step)."""
    common = set.intersection(*({int(r["step"]) for r in rows} for rows in runs.values()))
    if not common:
        return None
    step = max(common)
    return step, {n: next(r for r in rows if int(r["step"]) == step)
                  for n, rows in runs.items()}


def table(res: dict) -> str:
    lines = ["| recipe | steps | consistent | FCD/Test (consistent) | exact recon | recon nats "
             "| KL nats | active units |", "|---" * 8 + "|"]
    for name, r in res["recipes"].items():
        v = r["val"]
        lines.append(f"| {name} | {int(v.get('step', 0)):,} | {v.get('prior_consistent', 0):.3f} "
                     f"| {v.get('prior_fcd', float('nan')):.2f} | {v.get('recon_exact', 0):.3f} "
                     f"| {v.get('recon', 0):.2f} | {v.get('kl', 0):.2f} "
                     f"| {int(v.get('active_units', 0))} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES),
                    choices=[*RECIPES, *SCRATCH],
                    help="continuing recipes, or the from-scratch decoder sizes (dec_*)")
    ap.add_argument("--minutes", type=float, default=15.0, help="wall time per recipe")
    ap.add_argument("--molecules", type=int, default=200_000,
                    help="random MOSES train molecules to train on (0: all of them)")
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=2, help="recipes trained at once")
    ap.add_argument("--init", default=None, help="checkpoint to continue (default: bundled)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "recipes"))
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.init is None:
        from molvae.pretrained import default_model_path
        args.init = str(default_model_path())
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    data = subset(runs / f"train{args.molecules}.csv", args.molecules, args.seed)
    # tokenize once (the runs share the cache), then train the recipes
    from molvae.data import load_dataset
    load_dataset(data, vocab=molvae.load(args.init).vocab, progress=True)
    pending = [n for n in args.recipes if not (runs / n / "metrics.csv").exists()
               or not last_val(runs / n)]
    active: list[tuple[str, subprocess.Popen]] = []
    while pending or active:
        while pending and len(active) < args.parallel:
            name = pending.pop(0)
            cmd = command(name, data, runs / name, args.minutes, args.val_every, args.init)
            print("$", " ".join(cmd), flush=True)
            log = (runs / f"{name}.log").open("w")
            active.append((name, subprocess.Popen(cmd, stdout=log, stderr=log,
                                                  env={**os.environ, "OMP_NUM_THREADS": "1"})))
        time.sleep(5)
        for item in list(active):
            if item[1].poll() is not None:
                active.remove(item)
                print(f"{item[0]}: exit {item[1].returncode}", flush=True)
    res = {"minutes": args.minutes, "molecules": args.molecules, "seed": args.seed,
           "init": Path(args.init).name, "parallel": args.parallel, "threads_per_run": 1,
           "cpu": os.uname().machine, "recipes": {}}
    for name in args.recipes:
        out = runs / name
        cfg = json.loads((out / "config.json").read_text())
        res["recipes"][name] = {"val": last_val(out), "args": recipe_args(name),
                                "train_config": cfg["train_config"]}
    scratch = [n for n in args.recipes if n in SCRATCH]
    if not scratch:
        how = "continued the bundled model"
    elif len(scratch) == len(args.recipes):
        how = "trained from random weights (the moses recipe, constant lr, KL warm-up 500 steps)"
    else:
        how = "continued the bundled model (the dec_* recipes: trained from random weights)"
    on = (f"{args.molecules:,} random MOSES train molecules" if args.molecules
          else "all of MOSES train")
    md = (f"Each recipe {how} for {args.minutes:g} minutes (one thread, "
          f"{args.parallel} at a time) on {on}; the "
          "last validation row: 1,000 prior samples z ~ N(0, I) at temperature 1 (the same for "
          "every run) and the held-out split.\n\n" + table(res))
    trained = [n for n in args.recipes if n != "start"]  # start has only its one step
    same = at_common_step({n: val_rows(runs / n) for n in trained}) if trained else None
    if same and len(trained) > 1:
        step, rows = same
        res["at_common_step"] = {"step": step, "recipes": rows}
        md += (f"\n\nThe same runs at the last validation step they all reached ({step:,}), "
               "per step rather than per minute:\n\n"
               + table({"recipes": {n: {"val": v} for n, v in rows.items()}}))
    print(json.dumps(res, indent=2))
    print(md)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(res, indent=2) + "\n")
        Path(args.out + ".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
