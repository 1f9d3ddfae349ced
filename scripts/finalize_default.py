"""Turn a training run into the bundled default model, choosing its sampling density by
measurement, and write the model card with the numbers of the issue's protocol.

    python scripts/finalize_default.py runs/moses_default            # write molvae/pretrained/
    python scripts/finalize_default.py runs/moses_default --dry-run  # only measure

Protocol (all on prior samples at decoder temperature 1.0, seed 0):
  * 10,000 samples: valid, unique, novel against MOSES train;
  * 30,000 samples against the full MOSES test set: FCD/Test, Filters, Wasserstein-1 of logP,
    SA, QED, MW (and the rest of the MOSES table);
  * exact reconstruction (greedy from the posterior mean) of 1,000 MOSES test molecules.
Candidate densities: N(0, I) and diagonal Gaussian mixtures (64 and 1,024 components) fitted to
100,000 posterior samples of training molecules, and the best of those with its draws shrunk by
0.9, 0.8 and 0.7; each is screened on 5,000 raw and 5,000 grammar-consistent samples, and the one
whose consistent samples have the lowest FCD/Test at novelty >= 0.85 is kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from benchmark_moses import (
    END,
    START,
    hardware,
    latent_measures,
    markdown,
    measure,
    update_readme,
    write,
)

import molvae
from molvae import checkpoint as ckpt
from molvae import prior
from molvae.data import collate, load_dataset
from molvae.filters import failure_kind, filter_failures_many, is_pattern
from molvae.metrics import (
    fcd,
    format_table,
    fraction_passes_filters,
    fraction_unique,
    fraction_valid,
    load_moses,
    novelty,
)

ROOT = Path(__file__).resolve().parent.parent
MOSES = ROOT / "data" / "moses"
OUT = ROOT / "molvae" / "pretrained"


def posterior_samples(model: molvae.Model, n: int, seed: int) -> torch.Tensor:
    """z ~ q(z|x) for n random MOSES training molecules (the aggregate posterior)."""
    data, _ = load_dataset(MOSES / "train.csv.gz", vocab=model.vocab)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), 2000):
            x, lengths = collate(data, idx[s: s + 2000])
            mu, logvar = model.net.encode(x, lengths)
            out.append(mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp())
    return torch.cat(out)


def _quality(s: list, test: list[str]) -> dict:
    return {"valid": fraction_valid(s), "unique": fraction_unique(s), "FCD/Test": fcd(s, test),
            "Filters": fraction_passes_filters(s)}


def screen_density(model: molvae.Model, n: int, seed: int, test: list[str]) -> dict:
    """One candidate density: quality of n raw samples, and of n grammar-consistent ones with
    the acceptance rate it took to draw them."""
    row = _quality(molvae.sample(model, n, temperature=1.0, seed=seed, consistent=False), test)
    kept, stats = molvae.sample(model, n, temperature=1.0, seed=seed, return_stats=True)
    m = molvae.evaluate(kept, ks=())  # shipped MOSES statistics: FCD/Test, Filters, Novelty
    row["consistent"] = {"acceptance": stats.acceptance,
                         **{k: m[k] for k in ("FCD/Test", "Filters", "Novelty")}}
    print(model.prior.get("kind"), model.prior.get("components"), model.prior.get("scale", 1),
          json.dumps(row), flush=True)
    return row


def screen_densities(model: molvae.Model, args: argparse.Namespace, test: list[str]
                     ) -> tuple[molvae.Model, dict, str]:
    """N(0, I) and mixtures fitted to posterior samples of MOSES train, then the best of those
    with its draws shrunk by each of ``args.scales``; returns (the chosen model, every
    candidate's screen row, the chosen one's name)."""
    zs = posterior_samples(model, args.fit_n, args.seed)
    candidates = {"normal": prior.with_density(model, {"kind": "normal"})}
    for k in args.components:
        candidates[f"gmm{k}"] = prior.fit_points(
            model, zs, "gmm", components=k, seed=args.seed,
            fitted_on=f"{len(zs)} posterior samples of MOSES train molecules")
    screen = {name: screen_density(m, args.screen_n, args.seed, test)
              for name, m in candidates.items()}
    # what molvae.sample returns by default is the consistent samples: choose on those, then
    # try the winner with its draws shrunk (fewer decoding errors, less novelty)
    best = choose(screen, args.min_novelty)
    for scale in args.scales:
        name = f"{best}, scale {scale:g}"
        candidates[name] = prior.scaled(candidates[best], scale)
        screen[name] = screen_density(candidates[name], args.screen_n, args.seed, test)
    best = choose(screen, args.min_novelty)
    return candidates[best], screen, best


def choose(screen: dict, min_novelty: float) -> str:
    """The density whose consistent samples score the lowest FCD/Test among those at least
    ``min_novelty`` novel (all of them when none is)."""
    ok = [k for k, v in screen.items() if v["consistent"]["Novelty"] >= min_novelty] or screen
    return min(ok, key=lambda k: screen[k]["consistent"]["FCD/Test"])


def _screen_rows(screen: dict) -> str:
    """The card's density table; reports from before consistent screening show a dash."""
    rows = []
    for k, v in screen.items():
        c = v.get("consistent")
        tail = (f"{c['acceptance']:.3f} | {c['FCD/Test']:.3f} | {c['Filters']:.3f} | "
                f"{c['Novelty']:.3f}" if c else "- | - | - | -")
        rows.append(f"| {k} | {v['valid']:.4f} | {v['unique']:.4f} | {v['FCD/Test']:.3f} | "
                    f"{v['Filters']:.3f} | {tail} |")
    return "\n".join(rows)


def diagnose(model: molvae.Model, test: list[str], n: int, seed: int) -> dict:
    """Where do samples go wrong? The same quality numbers for z drawn from the posteriors of
    real test molecules (no prior mismatch possible) and for colder decoder temperatures (a
    sharper decoder), next to the protocol's prior samples at temperature 1.0."""
    rows = {}
    for t in (1.0, 0.85, 0.7):
        s = molvae.sample(model, n, temperature=t, seed=seed, consistent=False)
        rows[f"z from the sampling density, decoder temperature {t}"] = _quality(s, test)
        if t == 1.0:
            failures = filter_breakdown(s)
    rng = np.random.default_rng(seed + 1)
    mols = [test[i] for i in rng.choice(len(test), n, replace=False)]
    z = molvae.encode(model, mols, sample_posterior=True, seed=seed)
    rows["z ~ q(z|x) of test molecules, decoder temperature 1.0"] = _quality(
        molvae.decode(model, z, temperature=1.0, seed=seed), test)
    # what a perfect generator scores at this sample size (FCD is biased upwards for small n)
    rows["the test molecules themselves (no model)"] = _quality(mols, test)
    for name, row in rows.items():
        print(name, json.dumps(row), flush=True)
    print("filter failures", json.dumps(failures), flush=True)
    return {"rows": rows, "filter_failures": failures}


def filter_breakdown(samples: list[str | None], top: int = 8) -> dict:
    """Why valid samples fail the MOSES filters: the share of valid samples with each kind of
    failure (a molecule can fail for several reasons) and the commonest single patterns."""
    valid = [s for s in samples if s is not None]
    kinds: Counter = Counter()
    patterns: Counter = Counter()
    for rs in filter_failures_many(valid, progress=True):
        kinds.update(["fails the filters"] if rs else [])
        kinds.update({failure_kind(r) for r in rs})
        patterns.update(r for r in rs if is_pattern(r))
    n = max(1, len(valid))
    return {"valid": len(valid),
            "kinds": {k: v / n for k, v in kinds.most_common()},
            "patterns": {k: v / n for k, v in patterns.most_common(top)}}


def _lr_schedule(tc: dict, changes: list[dict] | None = None) -> str:
    """The learning-rate schedule in words; with the changes made on --resume (config.json's
    lr_schedule_changes) when there were any, since the final settings alone do not say what
    the earlier steps used."""
    if tc.get("lr_schedule", "constant") == "constant":
        text = " (constant)"
    else:
        text = (f" until step {tc['lr_decay_start']:,}, then a cosine anneal to "
                f"{tc['lr_final']} over {tc['lr_decay_steps']:,} steps")
    if changes:
        done = "; ".join(f"at step {c['step']:,}: "
                         + ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("step", "was"))
                         for c in changes)
        text += f" (the final settings; changed on resume {done})"
    return text


def _settings_at(tc: dict, changes: list[dict] | None, step: int
                 ) -> tuple[dict, list[dict], list[int]]:
    """The training settings a checkpoint at ``step`` was trained with: the run's final ones
    with every later schedule change undone (each records the settings it replaced under
    "was"), the changes made up to ``step``, and the steps of later changes that could not be
    undone (recorded before "was" existed)."""
    tc, later_unknown = dict(tc), []
    for c in reversed(changes or []):
        if c["step"] > step:
            if "was" in c:
                tc.update(c["was"])
            else:
                later_unknown.append(c["step"])
    return tc, [c for c in changes or [] if c["step"] <= step], sorted(later_unknown)


def _lineage(cfg: dict, step: int) -> tuple[str, str]:
    """How the run was made and how to make it again: from scratch (stage 1,
    scripts/train_default.sh) or continued from a checkpoint with --init (stage 2,
    scripts/train_default_v2.sh), as config.json's ``init_from`` records (every --init run,
    CLI or API, has it)."""
    init = cfg.get("init_from")
    done = "`python scripts/finalize_default.py RUN/last.safetensors`"
    if init is None:
        return ("Trained by `scripts/train_default.sh` with the `moses` preset "
                "(`molvae/presets/moses.toml`), finalized by `scripts/finalize_default.py` "
                "(which measured every number on this page).",
                "`bash scripts/train_default.sh RUN 100m`, repeated (each call continues the "
                f"run exactly where the last one stopped) until step {step}, then {done}")
    name, start = Path(init["path"]).name, init.get("step")
    origin = (f"a model at training step {start:,} (`{name}` when this run started)"
              if start is not None else f"`{name}`")
    return (f"Continued from {origin} with `molvae train --init` (its weights and vocabulary, "
            "a fresh optimizer), by `scripts/train_default_v2.sh`; that stage-1 model was trained "
            "by `scripts/train_default.sh` with the `moses` preset and is kept, with its own "
            "card, in `data/models/`. Finalized by `scripts/finalize_default.py` (which "
            "measured every number on this page). The training settings below are stage 2's.",
            f"`bash scripts/train_default_v2.sh RUN 100m`, repeated until step {step} (pass "
            f"`--max-steps {step}` to the last call), then {done}")


def _kept_section(title: str) -> str:
    """A section of the current card that another script measured (kept verbatim, since this
    script measures nothing about it), or nothing: "Domain" (scripts/fit_domain.py), "Recipe
    choices" (scripts/compare_recipes.py), "Sampling settings" (scripts/benchmark_grammar.py)."""
    path = OUT / "MODEL_CARD.md"
    text = path.read_text() if path.exists() else ""
    head = f"\n## {title}\n"
    if head not in text:
        return ""
    section = text.split(head, 1)[1].split("\n## ", 1)[0]
    return f"## {title}\n" + section.rstrip() + "\n\n"


def model_card(report: dict, run: Path) -> str:
    """The model card, every number taken from this script's measurements or the run's logs."""
    cfg = json.loads((run / "config.json").read_text())
    # the run may have gone on after the checkpoint: read its log only up to the checkpoint's step
    step = int(report["step"])
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if int(r["step"]) <= step]
    val = [r for r in rows if r["split"] == "val"]
    last = val[-1] if val else {}
    wall = float(rows[-1]["elapsed_s"]) if rows else float("nan")
    mc = cfg["model_config"]
    tc, changes, unknown = _settings_at(cfg["train_config"], cfg.get("lr_schedule_changes"),
                                        step)
    lr_text = _lr_schedule(tc, changes) + "".join(
        f" (a change at step {s:,}, after this checkpoint, recorded no earlier settings, so "
        "these may include it)" for s in unknown)
    trained_by, reproduce = _lineage(cfg, step)
    kl_text = {"constant": "constant from the first step",
               "cyclical": f"cyclical, {tc.get('kl_cycle_steps')}-step cycles"}.get(
        tc.get("kl_schedule", "linear"), f"linear warm-up over {tc['kl_warmup_steps']} steps")
    protocol = ("INTERIM MODEL, measured with --quick on the 10,000 samples above, not the "
                "30,000-sample MOSES protocol:" if report["quick"] else
                "30,000 samples against the MOSES test sets (MOSES protocol; FCD with fcd_torch):")
    n_params = sum(p.numel() for p in molvae.load(run / Path(report["checkpoint"]).name
                                                  ).net.parameters())
    r10, r30 = report["samples_10k"], report["samples_30k"]
    screen = _screen_rows(report["screen"])
    moses = "\n".join(f"| {k} | {v:.4f} |" for k, v in r30.items())
    diagnosis = "\n".join(f"| {k} | {v['valid']:.4f} | {v['unique']:.4f} | {v['FCD/Test']:.3f} | "
                          f"{v['Filters']:.3f} |" for k, v in report.get("diagnosis", {}).items())
    failures = report.get("filter_failures")
    filters = "" if not failures else (
        f"\nWhy the {failures['valid']:,} valid samples of the first row fail the MOSES filters "
        "(`molvae.metrics.filter_failures`; a molecule can fail for several reasons, so the "
        "shares do not add up):\n\n| reason | share of valid samples |\n|---|---|\n"
        + "".join(f"| {k} | {v:.3f} |\n" for k, v in
                  [*failures["kinds"].items(), *failures["patterns"].items()]))
    return f"""# molvae bundled default model: `moses_default.safetensors`

{report.get("note", "")}

{trained_by}

## Data
MOSES train (`data/moses/train.csv.gz`, sha256 `{cfg['data']['sha256'][:16]}...`):
{cfg['data']['molecules']:,} molecules tokenized, {cfg['data']['rejected']} rejected,
{cfg['data']['train']:,} for training and a seeded {cfg['data']['val']:,} for validation.

## Model
GRU VAE: embedding {mc['embed_dim']}, bidirectional encoder GRU
{mc['enc_layers']}x{mc['enc_hidden']}, latent {mc['latent_dim']}, decoder GRU
{mc['dec_layers']}x{mc['dec_hidden']} with z fed at every step; {n_params:,} parameters.
Vocabulary {len(cfg['vocab']['symbols']) + 3} tokens (SELFIES default constraints); stereo kept:
{mc['keep_stereo']}; largest fragment: {mc['largest_fragment']}; max length {mc['max_len']} symbols.

{_kept_section('Domain')}## Training
Loss per molecule: token cross-entropy + beta * sum_d max(KL_d, free_bits) with beta
{tc['beta']} ({kl_text}) and free bits {tc['free_bits']}
nats per dimension; AdamW lr {tc['lr']}{lr_text}; batch {tc['batch_size']}, gradient
clip {tc['grad_clip']}; teacher forcing only (Gumbel fraction {tc['gumbel_frac_end']}).
Checkpoint used: step {step}, after {wall / 60:.0f} minutes of training on
{report['hardware']['cores']} CPU cores ({report['hardware']['cpu']}), seed {cfg['seed']}.
Last validation: recon {float(last.get('recon', 'nan')):.2f} nats,
KL {float(last.get('kl', 'nan')):.2f} nats,
token accuracy {float(last.get('token_acc', 'nan')):.4f},
exact reconstruction {float(last.get('recon_exact', 'nan')):.3f},
active units {last.get('active_units', '?')}.

{_kept_section('Recipe choices')}## Where z is drawn from
Screened on {report['screen_n']:,} prior samples each at temperature 1.0, raw and
grammar-consistent (FCD against the full MOSES test set); the lowest FCD/Test of the
consistent samples (what `molvae.sample` returns) among those at least
{report.get('min_novelty', 0):.2f} novel was kept: **{report['chosen_density']}**. The
scaled rows draw from the best density with its spread shrunk (`molvae.prior.scaled`).

| density | valid | unique | FCD/Test | Filters | acceptance | consistent: FCD | Filters | Novelty |
|---|---|---|---|---|---|---|---|---|
{screen}

## Where the samples go wrong
The same numbers on {report['screen_n']:,} molecules each (FCD against the full MOSES test set,
which is biased upwards at this sample size: the last row, real test molecules, is the best any
model can score here; compare rows with each other rather than with the 30,000-sample table).
The first row is the protocol; the colder rows show how much a sharper decoder would help; the
q(z|x) row decodes latent points drawn from the posteriors of real test molecules, which no
prior mismatch can spoil.

| z and decoder | valid | unique | FCD/Test | Filters |
|---|---|---|---|---|
{diagnosis}
{filters}
## Results (temperature 1.0, seed 0)
10,000 samples: valid {r10['valid']:.4f}, unique@10000 {r10['unique@10000']:.4f}, novel against
MOSES train {r10['Novelty']:.4f}.
Exact reconstruction (greedy from the posterior mean) of 1,000 random MOSES test molecules:
{report['reconstruction_1k_test']:.3f}. Active latent units (variance of the posterior mean
above 0.01 over 5,000 test molecules): {report.get('active_units', '?')} of {mc['latent_dim']}.

{protocol}

| metric | value |
|---|---|
{moses}

{_kept_section('Sampling settings')}## The MOSES table, raw and grammar-consistent samples
`scripts/benchmark_moses.py`'s tables of the saved model (`molvae.sample` returns the
grammar-consistent samples by default; the raw ones are every draw):

{START}
{report.get("moses_table", "")}{END}

Reproduce: {reproduce} (finalizing took {report['wall_s'] / 60:.0f} minutes here). The
30,000-sample table is `scripts/benchmark_moses.py`'s measurement of the saved model (also in
`moses_benchmark.json` next to this card).
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", help="training run folder (its best checkpoint) or a checkpoint file "
                    "inside one")
    ap.add_argument("--dry-run", action="store_true", help="measure, write nothing")
    ap.add_argument("--fit-n", type=int, default=100_000,
                    help="posterior samples of MOSES train the mixtures are fitted to")
    ap.add_argument("--components", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--scales", type=float, nargs="*", default=[0.9, 0.8, 0.7],
                    help="also screen the best density with its draws shrunk by these factors")
    ap.add_argument("--min-novelty", type=float, default=0.85,
                    help="choose only among densities whose consistent samples are at least "
                    "this novel (the issue's floor)")
    ap.add_argument("--screen-n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="a status paragraph for the top of the card")
    ap.add_argument("--card-only", action="store_true",
                    help="rewrite MODEL_CARD.md from the saved moses_default.json, measure nothing")
    ap.add_argument("--quick", action="store_true",
                    help="interim model: 10,000-sample FCD/Filters instead of the 30,000-sample "
                    "MOSES table")
    return ap


def main() -> None:
    args = _parser().parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    if args.card_only:
        report = json.loads((OUT / "moses_default.json").read_text())
        report["note"] = args.note
        bench = OUT / "moses_benchmark.md"  # the latest benchmark_moses.py tables of the model
        if bench.exists():
            report["moses_table"] = bench.read_text()
        (OUT / "MODEL_CARD.md").write_text(model_card(report, run_dir))
        return
    t_start = time.time()
    model = molvae.load(args.run)
    test, train = load_moses("test"), load_moses("train")
    # record the run by folder and file name only: absolute paths are machine-specific
    short = "/".join(Path(model.path).parts[-2:])
    report: dict = {"run": short, "checkpoint": short, "step": model.meta.get("step"),
                    "hardware": hardware("cpu")}

    # 1. candidate sampling densities, screened on a few thousand samples
    chosen, report["screen"], report["chosen_density"] = screen_densities(model, args, test)
    report["screen_n"], report["min_novelty"] = args.screen_n, args.min_novelty
    diagnosis = diagnose(chosen, test, args.screen_n, args.seed)
    report["diagnosis"], report["filter_failures"] = diagnosis["rows"], diagnosis["filter_failures"]

    # 2. the protocol on the chosen density
    s10 = molvae.sample(chosen, 10_000, temperature=1.0, seed=args.seed, consistent=False)
    r10 = {"valid": fraction_valid(s10), "unique@10000": fraction_unique(s10, 10000),
           "Novelty": novelty(s10, train, progress=True)}
    report["samples_10k"] = r10
    report["quick"] = args.quick
    if not args.dry_run:
        OUT.mkdir(exist_ok=True)
        ckpt.save(chosen, OUT / "moses_default.safetensors",
                  {"chosen_density": report["chosen_density"]})
        chosen = molvae.load(OUT / "moses_default.safetensors")
    if args.quick:
        report["samples_30k"] = {"n_samples": 10_000, "FCD/Test": fcd(s10, test),
                                 "Filters": fraction_passes_filters(s10)}
        latent = latent_measures(chosen, test, args.seed)
        report["reconstruction_1k_test"] = latent["reconstruction"]
        report["active_units"] = latent["active_units"]
    else:
        # the MOSES benchmark of the saved model: the same numbers `benchmark_moses.py` prints
        bench = measure(chosen, 30_000, args.seed, picture=None if args.dry_run else
                        OUT / "moses_benchmark_properties.png")
        report["samples_30k"] = {"n_samples": 30_000, **bench["metrics"]}
        report["reconstruction_1k_test"] = bench["reconstruction"]
        report["active_units"] = bench["active_units"]
        if not args.dry_run:
            md = markdown(bench, "molvae (bundled)")
            write(bench, md, OUT / "moses_benchmark")
            update_readme(ROOT / "README.md", md)
            report["moses_table"] = md  # the card's benchmark block, filled when it is written
    report["wall_s"] = time.time() - t_start
    print(json.dumps(report, indent=2))
    print(format_table({**r10, **report["samples_30k"],
                        "reconstruction": report["reconstruction_1k_test"]}))
    if args.dry_run:
        return
    (OUT / "moses_default.json").write_text(json.dumps(report, indent=2) + "\n")
    report["note"] = args.note
    (OUT / "MODEL_CARD.md").write_text(model_card(report, run_dir))
    print(f"wrote {OUT / 'moses_default.safetensors'} "
          f"({(OUT / 'moses_default.safetensors').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
