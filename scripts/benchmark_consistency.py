"""Grammar-consistent sampling benchmark: the acceptance rate of raw samples, the cost of the
consistency check against the post-processing it joins, and the effective sampling rate.

On seed 0 it draws N raw samples and measures, on one process:

* acceptance: the share of raw samples whose sampled SELFIES string is the canonical SELFIES
  of the molecule it decodes to (what ``molvae.sample`` keeps by default);
* check cost: milliseconds per 1,000 molecules of ``chem.consistent_many`` against the
  existing post-processing (ids -> SELFIES -> SMILES with RDKit), and their ratio;
* effective rate: accepted molecules/s of ``molvae.sample`` end to end (it draws the same N
  latent points), next to raw ``consistent=False`` sampling of N.

Prints a JSON object and a markdown table.

    python scripts/benchmark_consistency.py                 # bundled model, N = 4000
    python scripts/benchmark_consistency.py --n 1000 --json out.json
    python scripts/benchmark_consistency.py --n 200 --weaker 8000   # strict vs a weaker check
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from benchmark_moses import hardware  # scripts/ is on sys.path when run as a script

import molvae
from molvae import chem
from molvae.config import resolve_device
from molvae.generate import _check_settings, iter_sample_ids
from molvae.vocab import EOS

WEAKER_ROWS = ("strict", "length-preserving", "length-preserving but not strict", "no repairs",
               "no repairs but not strict")


def measure(model: molvae.Model, n: int, seed: int, batch_size: int) -> dict:
    vocab = model.vocab
    settings = _check_settings(model)
    t = time.perf_counter()
    batches = list(iter_sample_ids(model, n, seed=seed, batch_size=batch_size))
    t_decode = time.perf_counter() - t
    t_post = t_check = 0.0
    flags: list[bool] = []
    with chem.constraints(vocab.constraints):
        for ids in batches:  # the work of generate._decoded, phase by phase
            t = time.perf_counter()
            ended = (ids == EOS).any(1)
            selfies = [vocab.decode(row) if end else None
                       for row, end in zip(ids.tolist(), ended)]
            smiles = chem.selfies_to_smiles_many(selfies)
            t_post += time.perf_counter() - t
            t = time.perf_counter()
            flags += chem.consistent_many(selfies, smiles, settings)
            t_check += time.perf_counter() - t
    accepted = int(sum(flags))
    res = {"n_raw": n, "accepted": accepted, "acceptance": accepted / n,
           "decode_ms_per_1000": 1000 * t_decode / n * 1000,
           "post_processing_ms_per_1000": 1000 * t_post / n * 1000,
           "check_ms_per_1000": 1000 * t_check / n * 1000,
           "check_over_post_processing": t_check / t_post}

    # end to end: raw sampling of n, and consistent sampling of the molecules found in those
    # n draws (so it decodes the same latent points, and stops at the last accepted one)
    t = time.perf_counter()
    raw = molvae.sample(model, n, seed=seed, batch_size=batch_size, consistent=False)
    t_raw = time.perf_counter() - t
    t = time.perf_counter()
    out, stats = molvae.sample(model, accepted, seed=seed, batch_size=batch_size,
                               return_stats=True)
    t_cons = time.perf_counter() - t
    valid = sum(s is not None for s in raw)
    res.update({"raw_mol_per_s": n / t_raw, "raw_valid_mol_per_s": valid / t_raw,
                "consistent_drawn": stats.drawn,
                "consistent_draws_per_s": stats.drawn / t_cons,
                "effective_accepted_mol_per_s": len(out) / t_cons,
                "consistent_time_over_raw": t_cons / t_raw})
    if stats.drawn > n or len(out) != accepted:
        raise SystemExit("consistent sampling disagrees with the raw draws' flags")
    return res


def quality(model: molvae.Model, n: int, seed: int) -> dict:
    """FCD/Test, MOSES filters and novelty of n raw and n consistent samples (same seed),
    against the full MOSES test and train sets (the statistics shipped in molvae/reference)."""
    out = {}
    for name, consistent in (("raw", False), ("consistent", True)):
        smiles = molvae.sample(model, n, seed=seed, consistent=consistent)
        m = molvae.evaluate(smiles)
        out[name] = {"n": n, **{k: m[k] for k in ("valid", "FCD/Test", "Filters", "Novelty")}}
    return out


def weaker(model: molvae.Model, n: int, seed: int) -> dict:
    """The strict check against two weaker ones on the same n raw draws:

    * *length-preserving*: the decoded molecule's canonical SELFIES has as many symbols as
      the sampled string (spelled in another order, or a bond order overridden, but nothing
      dropped);
    * *no repairs* (:func:`molvae.chem.faithful_many`): the SELFIES decoder read the string
      as written, nothing dropped or overridden, though its atom order may not be canonical.

    Quality is compared at equal size: the first m molecules each test keeps, m the
    smallest of the counts of the tests themselves."""
    vocab = model.vocab
    settings = {**_check_settings(model), "round_trip": False}
    selfies, smiles = [], []
    with chem.constraints(vocab.constraints):
        for ids in iter_sample_ids(model, n, seed=seed):
            ended = (ids == EOS).any(1)
            part = [vocab.decode(row) if end else None for row, end in zip(ids.tolist(), ended)]
            selfies += part
            smiles += chem.selfies_to_smiles_many(part)
        strict = chem.consistent_many(selfies, smiles, _check_settings(model))
        weak = []
        for sel, smi in zip(selfies, smiles):
            p = chem.prepare(smi, **settings) if smi else None
            weak.append(bool(p and p.ok and len(chem.split_selfies(p.selfies))
                             == len(chem.split_selfies(sel))))
        faithful = chem.faithful_many(selfies)
    tests = {"strict": strict, "length-preserving": weak, "no repairs": faithful}
    kept = {name: [s for s, ok in zip(smiles, flags) if ok] for name, flags in tests.items()}
    for name in ("length-preserving", "no repairs"):
        kept[f"{name} but not strict"] = [s for s, a, b in zip(smiles, strict, tests[name])
                                          if b and not a]
    m = min(len(kept[name]) for name in tests)
    out = {"n_raw": n, "m": m}
    for name, mols in kept.items():
        q = molvae.evaluate(mols[:m], ks=())
        out[name] = {"accepted": len(mols), "acceptance": len(mols) / n, "n": len(mols[:m]),
                     **{k: q[k] for k in ("FCD/Test", "Filters", "Novelty")}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: bundled)")
    ap.add_argument("--n", type=int, default=4000, help="raw samples drawn (default: 4000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="also write the JSON here")
    ap.add_argument("--quality", type=int, default=0, metavar="N",
                    help="also FCD/Test, filters and novelty of N raw and N consistent samples "
                         "(default: 0, skip)")
    ap.add_argument("--weaker", type=int, default=0, metavar="N",
                    help="also compare the strict check with weaker ones (length-preserving, "
                         "no repairs) on N raw draws (default: 0, skip)")
    args = ap.parse_args()
    device = str(resolve_device(args.device))
    model = molvae.load(args.model, device=device)
    res: dict = {"hardware": {**hardware(device), "load_1min": os.getloadavg()[0]},
                 "model": Path(model.path).name if model.path else None, "seed": args.seed}
    molvae.sample(model, 64, seed=1, consistent=False)  # warm-up
    res.update(measure(model, args.n, args.seed, args.batch_size))
    if args.quality:
        res["quality"] = quality(model, args.quality, args.seed)
    if args.weaker:
        res["weaker"] = weaker(model, args.weaker, args.seed)
    text = json.dumps(res, indent=2, default=lambda x: float(x) if np.isscalar(x) else str(x))
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    hw = res["hardware"]
    print(f"\nhardware: {hw['cpu']}, {hw['cores']} cores, device {device}, load "
          f"{hw['load_1min']:.1f}; {args.n:,} raw samples, seed {args.seed}\n")
    print("| measurement | result |\n|---|---|")
    print(f"| acceptance (grammar-consistent share of raw samples) | {res['acceptance']:.3f} "
          f"({res['accepted']} of {args.n}) |")
    print(f"| decoding (molvae's pipeline) | {res['decode_ms_per_1000']:.0f} ms / 1,000 |")
    print(f"| post-processing (ids -> SELFIES -> SMILES), one process | "
          f"{res['post_processing_ms_per_1000']:.0f} ms / 1,000 |")
    print(f"| consistency check, one process | {res['check_ms_per_1000']:.0f} ms / 1,000 |")
    print(f"| check / post-processing | {res['check_over_post_processing']:.2f} |")
    print(f"| raw sampling end to end | {res['raw_mol_per_s']:.0f} molecules/s |")
    print(f"| consistent sampling end to end: accepted molecules/s | "
          f"{res['effective_accepted_mol_per_s']:.0f} ({res['consistent_draws_per_s']:.0f} "
          f"draws/s) |")
    if "quality" in res:
        print("\n| samples (n each) | FCD/Test | Filters | Novelty |\n|---|---|---|---|")
        for name, q in res["quality"].items():
            print(f"| {name} ({q['n']:,}) | {q['FCD/Test']:.3f} | {q['Filters']:.3f} | "
                  f"{q['Novelty']:.3f} |")
    if "weaker" in res:
        w = res["weaker"]
        print(f"\n{w['n_raw']:,} raw draws; quality of the first {w['m']:,} each test keeps\n")
        print("| test | acceptance | FCD/Test | Filters | Novelty |\n|---|---|---|---|---|")
        for name in WEAKER_ROWS:
            if name not in w:
                continue
            q = w[name]
            print(f"| {name} | {q['acceptance']:.3f} | {q['FCD/Test']:.3f} | "
                  f"{q['Filters']:.3f} | {q['Novelty']:.3f} |")


if __name__ == "__main__":
    main()
