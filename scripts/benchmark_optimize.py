"""Latent-space optimization benchmark of the bundled model, with a screening baseline.

Three protocols, every method and a screening baseline (random MOSES test molecules under the
same budget) in the same run:

* ``pmo``: PMO's AUC top-10 (Gao et al. 2022: mean of the top-10 scores every 100 calls,
  trapezoid, divided by the budget) on QED and the similarity/MPO tasks defined in TASKS.
* ``plogp``: penalized logP (the ZINC-normalized form), at most 38 heavy atoms, top-3 after
  5,000 calls.
* ``constrained``: similarity-constrained improvement of penalized logP (JT-VAE's protocol on
  the MOSES test molecules with the lowest penalized logP): per molecule and threshold, the
  best improvement over the start among molecules at least that similar, and the success rate.

Every finished run is one JSON line in ``--out`` (a rerun skips the runs already there, so a
stopped benchmark resumes); at the end the script prints the summary as JSON and as markdown
tables. Wall time excludes nothing; ``objective_s`` says how much of it the objective took.

    python scripts/benchmark_optimize.py --protocol pmo --budget 10000 --seeds 0 1 2
    python scripts/benchmark_optimize.py --protocol plogp
    python scripts/benchmark_optimize.py --protocol constrained --molecules 800 --calls 100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_moses import cpu_name  # scripts/ is on sys.path when run as a script

import molvae
from molvae import mpo
from molvae.metrics import load_moses
from molvae.optimize import METHODS
from molvae.oracle import auc_top_k
from molvae.properties import similarity

ZOLPIDEM = "Cc1ccc(-c2nc3ccc(C)cn3c2CC(=O)N(C)C)cc1"
PIRIBEDIL = "C1CN(CCN1CC2=CC3=C(C=C2)OCO3)C4=NC=CC=N4"
MOCLOBEMIDE = "O=C(NCCN1CCOCC1)c1ccc(Cl)cc1"
NIKETHAMIDE = "CCN(CC)C(=O)c1cccnc1"


# Published anchors, quoted with their sources (different generators, data and protocols in
# part: see the README for how to read them).
PMO_QED = {  # PMO (Gao et al. 2022), Table: AUC top-10 on QED at 10,000 calls, mean of 5 runs
    "REINVENT (PMO)": 0.941, "SELFIES-VAE BO (PMO)": 0.936, "screening of ZINC (PMO)": 0.939}
PLOGP = {  # top-1 penalized logP (ZINC-normalized form); JT-VAE: Jin et al. 2018, GCPN: You et
    "JT-VAE (published)": 5.30, "GCPN (published)": 7.98}  # al. 2018, Table 1
CONSTRAINED = {  # mean improvement and success rate; GCPN paper (You et al. 2018), Table 3
    "JT-VAE (published)": {0.4: (0.84, 0.836), 0.6: (0.21, 0.464)},
    "GCPN (published)": {0.4: (2.49, 1.0), 0.6: (0.79, 1.0)},
}


def tasks() -> dict[str, object]:
    """The PMO-protocol tasks: QED and three similarity/MPO objectives built from molvae's
    pieces (none of them a PMO or GuacaMol task, so the defaults are not tuned to those)."""
    return {
        "qed": "qed",
        "zolpidem_similarity": similarity(ZOLPIDEM, name="zolpidem_similarity"),
        "moclobemide_mpo": mpo.geometric_mean(
            [similarity(MOCLOBEMIDE), mpo.gaussian("tpsa", 60.0, 15.0),
             mpo.gaussian("logp", 3.0, 1.0), mpo.threshold("qed", 0.8)],
            name="moclobemide_mpo"),
        "piribedil_nikethamide_median": mpo.mean(
            [similarity(PIRIBEDIL), similarity(NIKETHAMIDE)],
            name="piribedil_nikethamide_median"),
    }


def _screen(objective: object, budget: int, seed: int, pool: list[str],
            constraints: dict | None = None) -> dict:
    """The screening baseline: random molecules of the pool, scored in order."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    pick = [pool[i] for i in rng.choice(len(pool), min(budget, len(pool)), replace=False)]
    values = molvae.score(pick, objective)
    if constraints:
        from molvae.oracle import Constraints
        ok = Constraints.make(constraints).feasible(pick)
        values = np.where(ok, values, np.nan)
    return {"scores": values.tolist(), "smiles": pick, "seconds": time.perf_counter() - t0,
            "objective_s": time.perf_counter() - t0}


def _optimize(model, objective, method: str, budget: int, seed: int, options: dict,
              **kw) -> dict:
    res = molvae.optimize(model, objective, method=method, budget=budget, seed=seed,
                          **options.get(method, {}), **kw)
    return {"scores": [c.score for c in res.history], "smiles": [c.smiles for c in res.history],
            "seconds": res.seconds, "objective_s": res.objective_seconds,
            "decoded": res.decoded}


def _variant(method: str, options: dict) -> tuple[str, dict]:
    """The key suffix and the recorded settings of a method run with non-default --options
    (e.g. "+sigma0=1.0"), so that variants of a method live beside its default runs."""
    opts = options.get(method, {}) if method != "screening" else {}
    return ("+" + _settings(opts, "+") if opts else ""), opts


def _settings(opts: dict, sep: str) -> str:
    return sep.join(f"{k}={v}" for k, v in sorted(opts.items()))


def label(row: dict) -> str:
    """A row's method as the tables name it: "cmaes", or "cmaes (sigma0=1.0)"."""
    opts = row.get("options") or {}
    return row["method"] + (f" ({_settings(opts, ', ')})" if opts else "")


def _done(path: Path) -> dict[str, dict]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out[row["key"]] = row
    return out


def _record(path: Path, row: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def run_pmo(args, model, pool, out: Path, done: dict) -> list[dict]:
    rows = []
    for task, objective in tasks().items():
        if args.tasks and task not in args.tasks:
            continue
        for method in [*args.methods, "screening"]:
            for seed in args.seeds:
                suffix, opts = _variant(method, args.options)
                key = f"pmo/{task}/{method}/{seed}/{args.budget}{suffix}"
                if key not in done:
                    run = (_screen(objective, args.budget, seed, pool) if method == "screening"
                           else _optimize(model, objective, method, args.budget, seed,
                                          args.options))
                    s = np.asarray(run["scores"], float)
                    top = np.sort(s[np.isfinite(s)])[::-1]
                    done[key] = {"key": key, "protocol": "pmo", "task": task, "method": method,
                                 "seed": seed, "budget": args.budget, "calls": len(s),
                                 "auc_top10": auc_top_k(s, 10, 100, args.budget),
                                 "top1": float(top[0]) if len(top) else math.nan,
                                 "top10": float(top[:10].mean()) if len(top) else math.nan,
                                 "seconds": run["seconds"], "objective_s": run["objective_s"],
                                 "decoded": run.get("decoded")}
                    _record(out, done[key])
                    print(json.dumps(done[key]), file=sys.stderr, flush=True)
                rows.append(done[key])
    return rows


def run_plogp(args, model, pool, out: Path, done: dict) -> list[dict]:
    rows = []
    cap = {"max_heavy_atoms": 38}
    for method in [*args.methods, "screening"]:
        for seed in args.seeds:
            suffix, opts = _variant(method, args.options)
            key = f"plogp/{method}/{seed}/{args.plogp_budget}{suffix}"
            if key not in done:
                run = (_screen("plogp_norm", args.plogp_budget, seed, pool, cap)
                       if method == "screening"
                       else _optimize(model, "plogp_norm", method, args.plogp_budget, seed,
                                      args.options, **cap))
                s = np.asarray(run["scores"], float)
                order = np.argsort(-np.nan_to_num(s, nan=-np.inf))[:3]
                done[key] = {"key": key, "protocol": "plogp", "method": method,
                             **({"options": opts} if opts else {}), "seed": seed,
                             "budget": args.plogp_budget, "calls": len(s),
                             "top3": [float(s[i]) for i in order],
                             "top3_smiles": [run["smiles"][i] for i in order],
                             "seconds": run["seconds"], "objective_s": run["objective_s"]}
                _record(out, done[key])
                print(json.dumps(done[key]), file=sys.stderr, flush=True)
            rows.append(done[key])
    return rows


def run_constrained(args, model, pool, out: Path, done: dict) -> list[dict]:
    test = load_moses("test")
    objective = args.constrained_objective
    values = molvae.score(test, objective)
    order = np.argsort(np.nan_to_num(values, nan=np.inf))[: args.molecules]
    rows = []
    method = args.constrained_method
    for delta in (0.4, 0.6):
        for rank, i in enumerate(order):
            if rank % args.shard[1] != args.shard[0]:
                continue
            key = f"constrained/{objective}/{method}/{delta}/{test[i]}/{args.calls}"
            if key not in done:
                run = _optimize(model, objective, method, args.calls, rank, args.options,
                                start=[test[i]], similarity_to=test[i], min_similarity=delta)
                s = np.asarray(run["scores"], float)
                start = float(values[i])
                better = s[1:][np.isfinite(s[1:])]  # call 1 is the start molecule itself
                best = float(better.max()) if len(better) else math.nan
                done[key] = {"key": key, "protocol": "constrained", "method": method,
                             "objective": objective, "delta": delta, "smiles": test[i],
                             "start": start, "best": best,
                             "improvement": max(0.0, best - start) if len(better) else 0.0,
                             "success": bool(len(better) and best > start),
                             "calls": len(s), "seconds": run["seconds"]}
                _record(out, done[key])
            rows.append(done[key])
        print(f"constrained delta {delta}: done", file=sys.stderr, flush=True)
    return rows


def _mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return "-"
    return f"{np.mean(xs):.3f} ± {np.std(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def _pmo_table(pmo: list[dict], budget: int, summary: dict) -> list[str]:
    """AUC top-10 per task and method (mean ± std over seeds) at one budget."""
    task_names = list(dict.fromkeys(r["task"] for r in pmo))
    methods = list(dict.fromkeys(label(r) for r in pmo))
    seeds = sorted({r["seed"] for r in pmo})
    lines = [f"AUC top-10 at {budget:,} calls, seeds {', '.join(map(str, seeds))}:", "",
             "| method | " + " | ".join(task_names) + " | sum | wall s, objective excluded |",
             "|---" * (len(task_names) + 3) + "|"]
    for m in methods:
        cells, total = [], 0.0
        for t in task_names:
            xs = [r["auc_top10"] for r in pmo if r["task"] == t and label(r) == m]
            summary[f"pmo{budget}/{t}/{m}"] = float(np.mean(xs)) if xs else math.nan
            total += float(np.mean(xs)) if xs else math.nan
            cells.append(_mean_std(xs))
        secs = [r["seconds"] - r["objective_s"] for r in pmo if label(r) == m]
        wall = "" if m == "screening" else _mean_std(secs)
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {total:.3f} | {wall} |")
    if "qed" in task_names and budget == 10_000:
        for name, v in PMO_QED.items():
            cells = [f"{v:.3f}" if t == "qed" else "" for t in task_names]
            lines.append(f"| *{name}* | " + " | ".join(cells) + " | | |")
    return [*lines, ""]


def summarize(rows: list[dict]) -> tuple[dict, str]:
    summary: dict = {}
    lines: list[str] = []
    for budget in sorted({r["budget"] for r in rows if r["protocol"] == "pmo"}):
        pmo = [r for r in rows if r["protocol"] == "pmo" and r["budget"] == budget]
        lines += _pmo_table(pmo, budget, summary)
    plogp = [r for r in rows if r["protocol"] == "plogp"]
    if plogp:
        lines += ["| method | top-1 | top-2 | top-3 | calls |", "|---|---|---|---|---|"]
        for m in dict.fromkeys(label(r) for r in plogp):
            rs = [r for r in plogp if label(r) == m]
            cells = [_mean_std([r["top3"][k] for r in rs if len(r["top3"]) > k]) for k in range(3)]
            summary[f"plogp/{m}"] = float(np.mean([r["top3"][0] for r in rs]))
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {rs[0]['budget']} |")
        for name, v in PLOGP.items():
            lines.append(f"| *{name}* | {v:.2f} | | | |")
        lines.append("")
    cons = [r for r in rows if r["protocol"] == "constrained"]
    if cons:
        lines += ["| method | objective | threshold | molecules | mean improvement | success | "
                  "calls per molecule | s per molecule, mean (median) |",
                  "|---|---|---|---|---|---|---|---|"]
        groups = dict.fromkeys((r.get("objective", "plogp_norm"), r["delta"]) for r in cons)
        for obj, d in groups:
            rs = [r for r in cons if r["delta"] == d and r.get("objective", "plogp_norm") == obj]
            if rs:
                imp = float(np.mean([r["improvement"] for r in rs]))
                suc = float(np.mean([r["success"] for r in rs]))
                secs = [r["seconds"] for r in rs]
                summary[f"constrained/{obj}/{d}"] = {"improvement": imp, "success": suc,
                                                     "seconds_mean": float(np.mean(secs))}
                lines.append(f"| {rs[0]['method']} | {obj} | {d} | {len(rs)} | {imp:.2f} ± "
                             f"{np.std([r['improvement'] for r in rs]):.2f} | {suc:.3f} | "
                             f"{max(r['calls'] for r in rs)} | {np.mean(secs):.1f} "
                             f"({np.median(secs):.1f}) |")
        for name, by_delta in CONSTRAINED.items():
            for d, (imp, suc) in by_delta.items():
                lines.append(f"| *{name}* | plogp | {d} | 800 (ZINC) | {imp:.2f} | {suc:.3f} | "
                             "| |")
    return summary, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", nargs="+", default=["pmo"],
                   choices=["pmo", "plogp", "constrained"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--tasks", nargs="*", default=None, help="PMO tasks (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=10_000, help="PMO oracle budget")
    p.add_argument("--plogp-budget", type=int, default=5_000)
    p.add_argument("--molecules", type=int, default=800, help="constrained: start molecules")
    p.add_argument("--calls", type=int, default=100, help="constrained: calls per molecule")
    p.add_argument("--constrained-method", default="evolution", choices=list(METHODS))
    p.add_argument("--constrained-objective", default="plogp", choices=["plogp", "plogp_norm"],
                   help="penalized logP, raw (as JT-VAE's and GCPN's constrained experiments) "
                        "or ZINC-normalized")
    p.add_argument("--options", default="{}",
                   help='per-method options as JSON, e.g. \'{"bo": {"batch": 50}}\'')
    p.add_argument("--shard", type=int, nargs=2, default=[0, 1], metavar=("K", "N"),
                   help="constrained: run only the molecules whose rank %% N == K, so that N "
                        "processes share the protocol (same --out: each appends its own rows)")
    p.add_argument("--out", default="runs/benchmark_optimize.jsonl")
    p.add_argument("--model", default=None,
                   help="checkpoint to optimize in (default: the bundled model)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--report", nargs="+", default=None, metavar="JSONL",
                   help="run nothing: summarize the runs recorded in these files")
    args = p.parse_args(argv)
    args.options = json.loads(args.options)
    if not 0 <= args.shard[0] < args.shard[1]:
        p.error(f"--shard K N needs 0 <= K < N, got {args.shard[0]} {args.shard[1]}")
    if args.report:
        merged: dict[str, dict] = {}
        for f in args.report:  # a run recorded in two files (e.g. screening) counts once
            merged.update(_done(Path(f)))
        rows = list(merged.values())
        summary, table = summarize(rows)
        print(json.dumps(summary, indent=2))
        print(table)
        return 0
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    model = molvae.load(args.model)
    pool = load_moses("test")
    rows: list[dict] = []
    if "pmo" in args.protocol:
        rows += run_pmo(args, model, pool, out, done)
    if "plogp" in args.protocol:
        rows += run_plogp(args, model, pool, out, done)
    if "constrained" in args.protocol:
        rows += run_constrained(args, model, pool, out, done)
    summary, table = summarize(rows)
    summary["hardware"] = f"{cpu_name()}, {os.cpu_count()} cores, " \
                          f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}"
    summary["seeds"] = args.seeds
    print(json.dumps(summary, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
