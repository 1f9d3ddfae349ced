"""Sampling under the SELFIES grammar mask (molvae.grammar): what it buys and what it costs.

For each decoder temperature (``--temperatures``) and nucleus share (``--top-p``, 1 = the
whole distribution) the same seeded latent points and token noise are decoded twice, plainly
and under the mask, and each decode is judged:

* plain: kept when grammar-consistent (what ``molvae.sample`` keeps without the mask);
* mask, for each ``--min-mass`` m: kept when consistent and not *forced* at m (at some step
  the allowed tokens held less than m of the decoder's probability, so the mask rather than
  the model chose the string); m = 0 keeps every consistent decode.

Each row reports the acceptance (kept / drawn, counted up to the n-th kept molecule) and
FCD/Test, Filters and Novelty of the first ``--n`` kept (full MOSES test and train sets,
shipped statistics). Then the speed: accepted molecules/s of ``molvae.sample`` end to end with
and without the mask (same model, seed and n, one after the other), and their ratio.

Prints a JSON object and a markdown table.

    python scripts/benchmark_grammar.py                       # bundled model, n = 5000
    python scripts/benchmark_grammar.py --n 500 --temperatures 1.0 --json out.json   # quick
    python scripts/benchmark_grammar.py --json molvae/pretrained/grammar_benchmark.json
    python scripts/benchmark_grammar.py --temperatures 1.0 --top-p 0.9 0.8 0.75 0.7 0.6 \
        --min-mass 0.05 --speed-n 0 --json molvae/pretrained/nucleus_benchmark.json
    python scripts/benchmark_grammar.py --card-only --card molvae/pretrained/MODEL_CARD.md \
        --json molvae/pretrained/grammar_benchmark.json molvae/pretrained/nucleus_benchmark.json
                                                   # the bundled model's records and card
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_moses import hardware  # scripts/ is on sys.path when run as a script

import molvae
from molvae import decoding
from molvae.grammar import MIN_MASS

KEYS = ("FCD/Test", "Filters", "Novelty")


def decode_both(model: molvae.Model, draws: int, temperature: float, seed: int,
                chunk: int = 1000, top_p: float = 1.0) -> dict:
    """The same draws decoded plainly and under the mask: SMILES, consistency flags, and
    under the mask each decode's least kept probability mass."""
    settings = decoding._check_settings(model)
    out: dict = {"plain": ([], []), "mask": ([], []), "kept": []}
    model.net.eval()
    for start in range(0, draws, chunk):
        size = min(chunk, draws - start)
        z, noise = decoding._randoms(model, seed, start, size, True, temperature)
        for name in ("plain", "mask"):
            with torch.no_grad():  # molvae's own decode step, with and without the mask
                ids, kept = decoding._decode_ids(model, z, temperature, noise, name == "mask",
                                                 top_p)
            smiles, flags = decoding._decoded(model.vocab, ids, settings)
            out[name][0].extend(smiles)
            out[name][1].extend(flags)
            if kept is not None:
                out["kept"].extend(kept.tolist())
    return out


def judge(smiles: list, keep: np.ndarray, n: int) -> dict:
    idx = np.flatnonzero(keep)[:n]
    drawn = int(idx[-1]) + 1 if len(idx) == n else len(keep)
    row = {"acceptance": len(idx) / drawn, "kept": len(idx), "drawn": drawn}
    if len(idx) >= 2:
        m = molvae.evaluate([smiles[i] for i in idx], ks=())
        row.update({k: m[k] for k in KEYS})
    return row


def speed(model: molvae.Model, n: int, seed: int, temperature: float, top_p: float = 1.0
          ) -> dict:
    out: dict = {"temperature": temperature, "top_p": top_p, "n": n}
    molvae.sample(model, 64, temperature, seed=seed + 1, grammar=True, top_p=top_p)  # warm-up
    for name, grammar in (("plain", False), ("mask", True)):
        t = time.perf_counter()
        _, stats = molvae.sample(model, n, temperature, seed=seed, grammar=grammar,
                                 top_p=top_p, return_stats=True)
        secs = time.perf_counter() - t
        out[name] = {"accepted_mol_per_s": n / secs, "acceptance": stats.acceptance,
                     "seconds": secs}
    out["mask_over_plain"] = out["mask"]["accepted_mol_per_s"] / out["plain"][
        "accepted_mol_per_s"]
    return out


def table(res: dict) -> str:
    lines = ["| temperature | top-p | decoding | kept | acceptance | FCD/Test | Filters "
             "| Novelty |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        cells = [f"{r.get(k, float('nan')):.3f}" for k in KEYS]
        lines.append(f"| {r['temperature']} | {r.get('top_p', 1.0):g} | {r['decoding']} | "
                     f"{r['kept']:,} | "
                     f"{r['acceptance']:.3f} | " + " | ".join(cells) + " |")
    s = res.get("speed")
    if s:
        count = f", {s['n']:,} molecules" if "n" in s else ""
        nucleus = f", top-p {s['top_p']:g}" if s.get("top_p", 1.0) < 1 else ""
        lines += ["", f"| sampling (molvae.sample, temperature {s.get('temperature', 1.0):g}"
                  f"{nucleus}{count}) | accepted mol/s | acceptance |", "|---|---|---|"]
        for name in ("plain", "mask"):
            lines.append(f"| {name} | {s[name]['accepted_mol_per_s']:.0f} | "
                         f"{s[name]['acceptance']:.3f} |")
        lines.append(f"| mask / plain | {s['mask_over_plain']:.2f} | |")
    return "\n".join(lines)


CARD_SECTION = "Sampling settings"


def card_section(records: list[tuple[str, dict]], sampling: dict) -> str:
    """The model card's section: the saved sampling settings and each (file name, record)'s
    table."""
    mask = "on" if sampling.get("grammar") else "off"
    temperature = sampling.get("temperature", 1.0)
    nucleus = f", top-p {sampling['top_p']:g}," if sampling.get("top_p", 1.0) < 1 else ""
    text = (f"## {CARD_SECTION}\n"
            f"`molvae.sample` decodes this model at temperature {temperature:g}{nucleus} "
            f"with the SELFIES grammar mask {mask} (`Model.sampling`; arguments override it).")
    for name, res in records:
        hw = res.get("hardware", {})
        text += (f" `scripts/benchmark_grammar.py` (seed {res['seed']}, {res['n']:,} kept "
                 "molecules per row, FCD against the full MOSES test set; record "
                 f"`{name}`; {hw.get('cpu', '?')}, {hw.get('cores', '?')} cores):\n\n"
                 + table(res) + "\n\n")
    return text


def put_card_section(path: Path, section: str) -> None:
    """Replace the card's section of that title, or insert it before the MOSES table."""
    text = path.read_text()
    head = f"\n## {CARD_SECTION}\n"
    if head in text:
        before, rest = text.split(head, 1)
        after = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
        text = before + "\n" + section + "## " + after
    else:
        anchor = "## The MOSES table"
        text = text.replace(anchor, section + anchor, 1) if anchor in text else text + section
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--n", type=int, default=5000, help="kept molecules judged per row")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.8])
    ap.add_argument("--top-p", type=float, nargs="+", default=[1.0],
                    help="nucleus shares, each measured at every temperature (1: all tokens)")
    ap.add_argument("--min-mass", type=float, nargs="+", default=[0.0, MIN_MASS, 0.2])
    ap.add_argument("--min-acceptance", type=float, default=0.35,
                    help="draws per temperature: n / this")
    ap.add_argument("--speed-n", type=int, default=3000, help="molecules per speed run (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", nargs="+", default=None, help="also write the result here "
                    "(with --card-only: the records whose tables the card shows, in order)")
    ap.add_argument("--speed-only", action="store_true",
                    help="measure only the speed, into the --json record (rows kept)")
    ap.add_argument("--card-only", action="store_true",
                    help="measure nothing: write --card's section from the --json records")
    ap.add_argument("--card", default=None, help="also write the table into this model card's "
                    f"'{CARD_SECTION}' section (e.g. molvae/pretrained/MODEL_CARD.md)")
    args = ap.parse_args()
    model = molvae.load(args.model) if args.model else molvae.load()
    if args.card_only:
        if not (args.json and args.card):
            ap.error("--card-only needs --json (the records) and --card")
        records = [(Path(p).name, json.loads(Path(p).read_text())) for p in args.json]
        put_card_section(Path(args.card), card_section(records, model.sampling))
        return
    if args.json and len(args.json) > 1:
        ap.error("--json takes one record except with --card-only")
    record = Path(args.json[0]) if args.json else None
    if args.speed_only:
        if record is None:
            ap.error("--speed-only needs --json (the record to update)")
        res = json.loads(record.read_text())
        res["speed"] = speed(model, args.speed_n, args.seed, args.temperatures[0],
                             args.top_p[0])
        res["hardware"] = hardware("cpu")
        record.write_text(json.dumps(res, indent=2) + "\n")
        print(table(res))
        return
    draws = math.ceil(args.n / args.min_acceptance)
    rows = []
    for temperature, top_p in ((temp, p) for temp in args.temperatures for p in args.top_p):
        t = time.perf_counter()
        dec = decode_both(model, draws, temperature, args.seed, top_p=top_p)
        plain_smiles, plain_ok = dec["plain"]
        rows.append({"temperature": temperature, "top_p": top_p, "decoding": "plain",
                     **judge(plain_smiles, np.array(plain_ok), args.n)})
        smiles, ok = dec["mask"]
        kept = np.array(dec["kept"])
        for m in args.min_mass:
            name = "mask" if m == 0 else f"mask, forced < {m:g} rejected"
            rows.append({"temperature": temperature, "top_p": top_p, "decoding": name,
                         "min_mass": m,
                         **judge(smiles, np.array(ok) & (kept >= m), args.n)})
        print(f"temperature {temperature}, top-p {top_p:g}: {time.perf_counter() - t:.0f} s",
              flush=True)
    res = {"model": Path(model.path).name if model.path else None, "n": args.n,
           "draws_per_temperature": draws, "seed": args.seed, "hardware": hardware("cpu"),
           "rows": rows}
    if args.speed_n:
        res["speed"] = speed(model, args.speed_n, args.seed, args.temperatures[0],
                             args.top_p[0])
    print(json.dumps(res, indent=2))
    print(table(res))
    if record is not None:
        record.write_text(json.dumps(res, indent=2) + "\n")
    if args.card:
        name = record.name if record is not None else "not saved"
        put_card_section(Path(args.card), card_section([(name, res)], model.sampling))


if __name__ == "__main__":
    main()
