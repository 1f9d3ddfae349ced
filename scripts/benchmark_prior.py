"""Which density should z be drawn from? Sampling densities compared on one model.

Every candidate is fitted to the same posterior samples z ~ q(z|x) of a seeded random subset of
MOSES train (``--fit-molecules``) and judged by what its samples look like (``--scales``: also
with its draws shrunk or widened, ``molvae.prior.scaled``):

* ``acceptance``: the grammar-consistent share of raw samples (molvae's analogue of validity);
* FCD/Test, Filters and Novelty (full MOSES test and train sets, shipped statistics) of
  ``--n`` grammar-consistent samples (what ``molvae.sample`` returns) and of ``--n`` raw ones;
* ``held-out NLL``: the density's negative log-likelihood (nats per point) of posterior samples
  of MOSES test molecules, which no candidate saw (a density that memorizes its training points
  scores badly here);
* the fit and sampling times.

The last row is the upper bound the issue asks for: z drawn from the posteriors of random
training molecules (what a density that matched the aggregate posterior exactly would give,
and also what memorizing it gives: read its novelty).

    python scripts/benchmark_prior.py                                    # bundled model
    python scripts/benchmark_prior.py --n 1000 --fit-molecules 5000 --flow-steps 200  # quick
    python scripts/benchmark_prior.py --report molvae/pretrained/prior_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_moses import hardware  # scripts/ is on sys.path when run as a script

import molvae
from molvae import prior
from molvae.metrics import load_moses

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("valid", "FCD/Test", "Filters", "Novelty")


def _quality(smiles: list) -> dict:
    m = molvae.evaluate(smiles, ks=())
    return {k: m[k] for k in KEYS}


def judge(model: molvae.Model, n: int, seed: int, held_out: torch.Tensor,
          temperature: float = 1.0) -> dict:
    """Acceptance, quality of n consistent and n raw samples, held-out NLL, sampling times."""
    t = time.perf_counter()
    cons, stats = molvae.sample(model, n, temperature, seed=seed, return_stats=True)
    t_cons = time.perf_counter() - t
    raw = molvae.sample(model, n, temperature, seed=seed, consistent=False)
    with torch.no_grad():
        nll = float(-prior.log_prob(model, held_out).mean())
    return {"acceptance": stats.acceptance, "drawn": stats.drawn,
            "accepted_mol_per_s": n / t_cons, "held_out_nll": nll,
            "consistent": _quality(cons), "raw": _quality(raw)}


def upper_bound(model: molvae.Model, train: list[str], n: int, seed: int) -> dict:
    """z ~ q(z|x) of n random training molecules, decoded at temperature 1 (one draw each)."""
    rng = np.random.default_rng(seed + 7)
    mols = [train[i] for i in rng.choice(len(train), n, replace=False)]
    z, _ = prior.posterior_samples(model, mols, seed=seed + 7)
    smiles, flags = molvae.decode(model, z, temperature=1.0, seed=seed, with_consistency=True)
    kept = [s for s, ok in zip(smiles, flags) if ok]
    return {"acceptance": float(np.mean(flags)), "drawn": len(z), "held_out_nll": None,
            "accepted_mol_per_s": None,
            "consistent": {**_quality(kept), "n": len(kept)}, "raw": _quality(smiles)}


def candidates(model: molvae.Model, z: torch.Tensor, names: list[str], seed: int,
               flow_steps: int, flow_hidden: int, flow_layers: int) -> dict:
    """name -> (model sampling from that density, fit seconds)."""
    out = {}
    for name in names:
        t = time.perf_counter()
        if name == "bundled":
            m = model
        elif name == "normal":
            m = prior.with_density(model, {"kind": "normal"})
        elif name.startswith("gmm"):
            m = prior.fit_points(model, z, "gmm", components=int(name[3:]), seed=seed)
        elif name == "flow":
            m = prior.fit_points(model, z, "flow", seed=seed, steps=flow_steps,
                                 hidden=flow_hidden, layers=flow_layers, progress=True)
        else:
            raise SystemExit(f"unknown density {name!r}")
        out[name] = (m, time.perf_counter() - t)
        print(f"{name}: fitted in {out[name][1]:.0f} s {m.prior.get('fit', '')}", flush=True)
    return out


def table(res: dict) -> str:
    lines = ["| density | acceptance | FCD/Test | Filters | Novelty | raw FCD/Test | raw Filters "
             "| held-out NLL | accepted mol/s | fit s |", "|---" * 10 + "|"]
    for name, r in res["densities"].items():
        c, w = r["consistent"], r["raw"]
        nll = "" if r["held_out_nll"] is None else f"{r['held_out_nll']:.1f}"
        rate = "" if r["accepted_mol_per_s"] is None else f"{r['accepted_mol_per_s']:.0f}"
        fit = "" if r.get("fit_s") is None else f"{r['fit_s']:.0f}"
        label = (name + (f" ({c['n']:,} consistent)" if "n" in c else "")).replace("|", "\\|")
        lines.append(f"| {label} | {r['acceptance']:.3f} | {c['FCD/Test']:.3f} | "
                     f"{c['Filters']:.3f} | {c['Novelty']:.3f} | {w['FCD/Test']:.3f} | "
                     f"{w['Filters']:.3f} | {nll} | {rate} | {fit} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: bundled)")
    ap.add_argument("--densities", nargs="+",
                    default=["normal", "bundled", "gmm64", "gmm1024", "flow"])
    ap.add_argument("--fit-molecules", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=3000, help="samples per density and kind")
    ap.add_argument("--held-out", type=int, default=5000, help="test molecules for the NLL")
    ap.add_argument("--flow-steps", type=int, default=4000)
    ap.add_argument("--flow-hidden", type=int, default=256)
    ap.add_argument("--flow-layers", type=int, default=8)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                    help="decoder temperatures to judge each density at (default: 1.0)")
    ap.add_argument("--scales", type=float, nargs="+", default=[None],
                    help="also judge each density with its draws shrunk or widened by these "
                    "factors (molvae.prior.scaled; default: each density as fitted)")
    ap.add_argument("--no-upper-bound", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="measure nothing: print the table of a saved OUT.json")
    ap.add_argument("--save", default=None, metavar="DIR",
                    help="also save each fitted candidate's checkpoint in DIR")
    args = ap.parse_args()
    if args.report:
        print(table(json.loads(Path(args.report).read_text())))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model = molvae.load(args.model)
    train, test = load_moses("train"), load_moses("test")
    rng = np.random.default_rng(args.seed)
    fit_mols = [train[i] for i in rng.choice(len(train), args.fit_molecules, replace=False)]
    z, skipped = prior.posterior_samples(model, fit_mols, seed=args.seed, progress=True)
    held = [test[i] for i in rng.choice(len(test), args.held_out, replace=False)]
    z_held, _ = prior.posterior_samples(model, held, seed=args.seed + 1)
    res: dict = {"model": Path(model.path).name if model.path else None, "seed": args.seed,
                 "hardware": {**hardware("cpu"), "threads": torch.get_num_threads()},
                 "fit_molecules": args.fit_molecules, "fit_skipped": len(skipped), "n": args.n,
                 "held_out": args.held_out, "bundled_prior": model.prior,
                 "flow": {"steps": args.flow_steps, "hidden": args.flow_hidden,
                          "layers": args.flow_layers}, "densities": {}}
    for name, (m, fit_s) in candidates(model, z, args.densities, args.seed, args.flow_steps,
                                       args.flow_hidden, args.flow_layers).items():
        for temp, scale in [(t, sc) for t in args.temperatures for sc in args.scales]:
            ms = m if scale is None else prior.scaled(m, scale)
            r = judge(ms, args.n, args.seed, z_held, temp)
            r["fit_s"] = None if name in ("bundled", "normal") else fit_s
            r["prior"] = {k: v for k, v in ms.prior.items()}
            r["temperature"] = temp
            label = name + ("" if args.temperatures == [1.0] else f", temperature {temp:g}") + (
                "" if scale is None else f", scale {scale:g}")
            res["densities"][label] = r
            print(label, json.dumps(r), flush=True)
        if args.save and name not in ("bundled", "normal"):
            os.makedirs(args.save, exist_ok=True)
            molvae.save(m, Path(args.save) / f"{name}.safetensors")
    if not args.no_upper_bound:
        res["densities"]["q(z|x) of train molecules (upper bound)"] = upper_bound(
            model, train, args.n, args.seed)
    res["wall_s"] = time.perf_counter() - t_start
    temps = ", ".join(f"{t:g}" for t in args.temperatures)
    md = (f"{args.n:,} grammar-consistent and {args.n:,} raw samples per density (seed "
          f"{args.seed}, decoder temperature {temps}; FCD against the full MOSES test set, so "
          f"biased upwards at this size: compare rows), densities fitted to one posterior "
          f"sample each of {args.fit_molecules:,} random MOSES train molecules; held-out NLL on "
          f"{args.held_out:,} test molecules' posterior samples; "
          f"{res['hardware']['cpu']}, {res['hardware']['threads']} threads.\n\n" + table(res))
    print(json.dumps(res, indent=2, default=str))
    print(md)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        Path(args.out + ".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
