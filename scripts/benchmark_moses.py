"""The MOSES benchmark of a molvae model, set beside the published MOSES baselines.

30,000 prior samples (at the model's sampling settings: decoder temperature, nucleus, grammar
mask) are scored with the full MOSES metric suite
(molvae.metrics, the MOSES definitions) against the MOSES test and scaffold-test sets shipped in
data/moses, twice: raw samples, and the grammar-consistent samples `molvae.sample` returns by
default (with the acceptance rate, the consistent share of raw draws, beside the baselines'
validity); the exact reconstruction rate of 1,000 random test molecules and the number of
active latent units on 5,000 more are added, because MOSES reports neither.

    python scripts/benchmark_moses.py                          # the bundled model
    python scripts/benchmark_moses.py runs/x/last.safetensors -n 30000 --seed 0
    python scripts/benchmark_moses.py --out molvae/pretrained/moses_benchmark --readme README.md

Writes PREFIX.json (every number, the model, seeds, hardware and wall times), PREFIX.md (the
tables) and PREFIX_properties.png (logP, SA, QED and weight of the samples against the test
set), PREFIX defaulting to ./moses_benchmark; prints the markdown. With --readme the
markdown replaces the block between the markers
    <!-- benchmark_moses:start --> and <!-- benchmark_moses:end -->
of that file (and with --card of the model card), so the README's results section is always
this script's output.

The first run on a machine computes the reference statistics of the two MOSES test sets
(ChemNet activations and fingerprints of 2 x 176k molecules; about 25 minutes per set on two CPU
cores) and caches them in ~/.cache/molvae/metrics; later runs take minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import molvae
from molvae.metrics import (
    PROPERTY_NAMES,
    evaluate,
    load_moses,
    molecule_properties,
    reference_properties,
    reference_statistics,
)
from molvae.plots import property_histograms
from molvae.sampling import sampling_settings

ROOT = Path(__file__).resolve().parent.parent

# Published baselines, mean and standard deviation over three runs, from the MOSES repository
# README (github.com/molecularsets/moses) and Polykovskiy et al. 2020, "Molecular Sets (MOSES): A
# Benchmarking Platform for Molecular Generation Models", Front. Pharmacol. 11:565644, Table 2.
# The "Train" row is the training set itself scored against the test sets.
COLUMNS = ("valid", "unique@1000", "unique@10000", "FCD/Test", "FCD/TestSF", "SNN/Test",
           "SNN/TestSF", "Frag/Test", "Frag/TestSF", "Scaf/Test", "Scaf/TestSF", "IntDiv",
           "IntDiv2", "Filters", "Novelty")
BASELINES: dict[str, tuple[tuple[float, float], ...]] = {
    "Train": ((1.0, 0), (1.0, 0), (1.0, 0), (0.008, 0), (0.4755, 0), (0.6419, 0), (0.5859, 0),
              (1.0, 0), (0.9986, 0), (0.9907, 0), (0.0, 0), (0.8567, 0), (0.8508, 0), (1.0, 0),
              (1.0, 0)),
    "CharRNN": ((0.9748, 0.0264), (1.0, 0.0), (0.9994, 0.0003), (0.0732, 0.0247),
                (0.5204, 0.0379), (0.6015, 0.0206), (0.5649, 0.0142), (0.9998, 0.0002),
                (0.9983, 0.0003), (0.9242, 0.0058), (0.1101, 0.0081), (0.8562, 0.0005),
                (0.8503, 0.0005), (0.9943, 0.0034), (0.8419, 0.0509)),
    "VAE": ((0.9767, 0.0012), (1.0, 0.0), (0.9984, 0.0005), (0.099, 0.0125), (0.567, 0.0338),
            (0.6257, 0.0005), (0.5783, 0.0008), (0.9994, 0.0001), (0.9984, 0.0003),
            (0.9386, 0.0021), (0.0588, 0.0095), (0.8558, 0.0004), (0.8498, 0.0004),
            (0.997, 0.0002), (0.6949, 0.0069)),
    "AAE": ((0.9368, 0.0341), (1.0, 0.0), (0.9973, 0.002), (0.5555, 0.2033), (1.0572, 0.2375),
            (0.6081, 0.0043), (0.5677, 0.0045), (0.991, 0.0051), (0.9905, 0.0039),
            (0.9022, 0.0375), (0.0789, 0.009), (0.8557, 0.0031), (0.8499, 0.003),
            (0.996, 0.0006), (0.7931, 0.0285)),
    "JTN-VAE": ((1.0, 0.0), (1.0, 0.0), (0.9996, 0.0003), (0.3954, 0.0234), (0.9382, 0.0531),
                (0.5477, 0.0076), (0.5194, 0.007), (0.9965, 0.0003), (0.9947, 0.0002),
                (0.8964, 0.0039), (0.1009, 0.0105), (0.8551, 0.0034), (0.8493, 0.0035),
                (0.976, 0.0016), (0.9143, 0.0058)),
    "LatentGAN": ((0.8966, 0.0029), (1.0, 0.0), (0.9968, 0.0002), (0.2968, 0.0087),
                  (0.8281, 0.0117), (0.5371, 0.0004), (0.5132, 0.0002), (0.9986, 0.0004),
                  (0.9972, 0.0007), (0.8867, 0.0009), (0.1072, 0.0098), (0.8565, 0.0007),
                  (0.8505, 0.0006), (0.9735, 0.0006), (0.9498, 0.0006)),
}
LOWER_IS_BETTER = {"FCD/Test", "FCD/TestSF", "logP", "SA", "QED", "weight"}
START, END = "<!-- benchmark_moses:start -->", "<!-- benchmark_moses:end -->"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str) -> dict:
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "device": device,
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def latent_measures(model: molvae.Model, test: list[str], seed: int = 0, recon_n: int = 1000,
                    au_n: int = 5000) -> dict:
    """Exact reconstruction of recon_n and active units of au_n more test molecules: two
    disjoint random draws, fixed by the seed."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(test), size=min(recon_n + au_n, len(test)), replace=False)
    return {"reconstruction": molvae.reconstruction_rate(model, [test[i] for i in pick[:recon_n]]),
            "reconstruction_n": recon_n,
            "active_units": molvae.active_units(model, [test[i] for i in pick[recon_n:]]),
            "active_units_n": au_n}


def measure(model: molvae.Model, n: int = 30_000, seed: int = 0, recon_n: int = 1000,
            au_n: int = 5000, device: str = "cpu", progress: bool = True,
            picture: Path | None = None, shipped: bool = True,
            kinds: tuple[str, ...] = ("raw", "consistent")) -> dict:
    """Samples n molecules and measures the MOSES table, reconstruction and active units;
    with ``picture``, also draws the samples' property distributions against the test set
    (of the consistent samples when measured, else the raw ones).

    ``kinds``: "raw" (``result["metrics"]``) and/or "consistent" (``result["consistent"]``:
    metrics, acceptance, draws and accepted molecules/s of grammar-consistent sampling).

    ``shipped``: the MOSES reference statistics shipped in molvae/reference (the same
    numbers as computing them from data/moses, in seconds instead of an hour); False computes
    them from ``load_moses``."""
    test = load_moses("test")
    temperature, grammar, top_p = sampling_settings(model, None, None)
    result: dict = {"n_samples": n, "seed": seed, "temperature": temperature,
                    "grammar_mask": grammar, "top_p": top_p,
                    "model": {"file": Path(model.path).name if model.path else None,
                              "step": model.meta.get("step"),
                              "prior": model.prior.get("kind"),
                              "components": model.prior.get("components"),
                              "scale": model.prior.get("scale", 1.0),
                              "parameters": sum(p.numel() for p in model.net.parameters()),
                              "latent_dim": model.config.latent_dim},
                    "hardware": hardware(device), "wall_s": {}}
    refs = {} if shipped else {"test": test, "test_scaffolds": load_moses("test_scaffolds"),
                               "train": load_moses("train")}
    samples: list = []
    if "raw" in kinds:
        t = time.perf_counter()
        samples = molvae.sample(model, n, seed=seed, consistent=False)
        result["wall_s"]["sample"] = time.perf_counter() - t
        t = time.perf_counter()
        result["metrics"] = evaluate(samples, **refs, device=device, progress=progress)
        result["wall_s"]["evaluate"] = time.perf_counter() - t
    if "consistent" in kinds:
        t = time.perf_counter()
        samples, stats = molvae.sample(model, n, seed=seed, return_stats=True)
        took = time.perf_counter() - t
        result["wall_s"]["sample_consistent"] = took
        t = time.perf_counter()
        result["consistent"] = {
            "metrics": evaluate(samples, **refs, device=device, progress=progress),
            "acceptance": stats.acceptance, "drawn": stats.drawn,
            "accepted_mol_per_s": n / took}
        result["wall_s"]["evaluate_consistent"] = time.perf_counter() - t
    if picture is not None:  # the test set's properties: shipped, or the cache evaluate() filled
        ref = reference_properties("test") if shipped else reference_statistics(test, fcd=False)
        picture.parent.mkdir(parents=True, exist_ok=True)
        property_histograms(molecule_properties(samples), {k: ref[k] for k in PROPERTY_NAMES},
                            picture, labels=(f"{n:,} {'consistent ' * ('consistent' in kinds)}"
                                             "samples", "MOSES test"))
    t = time.perf_counter()
    result.update(latent_measures(model, test, seed, recon_n, au_n))
    result["wall_s"]["latent"] = time.perf_counter() - t
    return result


def _fmt(value: float | None, digits: int = 4) -> str:
    return "nan" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def markdown(result: dict, label: str = "molvae") -> str:
    """The MOSES table with the published baselines, then molvae's extra rows."""
    hw = result["hardware"]
    names = {"valid": "Valid", "unique@1000": "Unique@1k", "unique@10000": "Unique@10k"}
    head = ["Model", *[names.get(c, c) for c in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, values in BASELINES.items():
        cells = [f"{mean:.4g}" for mean, _ in values]
        lines.append(f"| {'*Train*' if name == 'Train' else name} | " + " | ".join(cells) + " |")
    rows = []
    if "metrics" in result:
        rows.append((f"{label}, raw samples", result["metrics"]))
    if "consistent" in result:
        rows.append((f"{label}, grammar-consistent", result["consistent"]["metrics"]))
    for name, m in rows:
        lines.append(f"| **{name}** | " + " | ".join(f"**{_fmt(m.get(c))}**" for c in COLUMNS)
                     + " |")
    extra = [(f"{name}: logP, SA, QED, weight, Wasserstein-1 to the test set",
              ", ".join(_fmt(m.get(k), 3) for k in ("logP", "SA", "QED", "weight")))
             for name, m in rows]
    if "consistent" in result:
        c = result["consistent"]
        extra.append(("acceptance rate of grammar-consistent sampling (its consistent share of "
                      "raw draws: molvae's analogue of the baselines' Valid)",
                      f"{c['acceptance']:.3f} ({result['n_samples']:,} of {c['drawn']:,} "
                      f"draws; {c['accepted_mol_per_s']:.0f} accepted molecules/s)"))
    extra += [
        (f"exact reconstruction, {result['reconstruction_n']:,} random test molecules "
         "(greedy from the posterior mean)", f"{result['reconstruction']:.3f}"),
        (f"active units (Var of the posterior mean > 0.01), {result['active_units_n']:,} test "
         "molecules", f"{result['active_units']} of {result['model']['latent_dim']}"),
    ]
    lines += ["", "| molvae, beyond the MOSES table | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in extra]
    mod = result["model"]
    prior = mod["prior"] + (f" ({mod['components']} components)" if mod.get("components") else "")
    prior += f", draws scaled by {mod['scale']:g}" if mod.get("scale", 1) != 1 else ""
    lines += ["", f"{label}: `{mod['file']}` (training step {mod['step']}, "
              f"{mod['parameters'] / 1e6:.1f}M parameters, latent sampling density {prior}); "
              f"{result['n_samples']:,} samples at temperature {result['temperature']}"
              + (f", top-p {result['top_p']:g}" if result.get("top_p", 1) < 1 else "")
              + (" under the SELFIES grammar mask (forced decodes count as inconsistent)"
                 if result.get("grammar_mask") else "") + ", seed "
              f"{result['seed']}; {hw['cpu']}, {hw['cores']} cores"
              + (f", {hw['gpu']}" if hw.get("gpu") else "") + f", torch {hw['torch']}. "
              "Baselines: mean of three runs as published in the MOSES repository README "
              "(Polykovskiy et al. 2020); lower is better for FCD and the property distances, "
              "higher for the rest."]
    return "\n".join(lines) + "\n"


def update_readme(path: Path, md: str) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no '{START}' ... '{END}' block to replace")
    block = f"{START}\n{md}{END}"
    path.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text,
                           flags=re.S))


def write(result: dict, md: str, prefix: Path) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(result), parse_constant=lambda _: None)  # NaN -> null
    prefix.with_suffix(".json").write_text(json.dumps(clean, indent=2) + "\n")
    prefix.with_suffix(".md").write_text(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None, help="checkpoint (default: bundled model)")
    ap.add_argument("-n", type=int, default=30_000, help="samples (MOSES protocol: 30,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recon-n", type=int, default=1000)
    ap.add_argument("--au-n", type=int, default=5000)
    ap.add_argument("--label", default="molvae (bundled)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--temperature", type=float, default=None,
                    help="decoder temperature (default: the model's sampling setting)")
    ap.add_argument("--grammar-mask", action=argparse.BooleanOptionalAction, default=None,
                    help="sample under the grammar mask or not (default: the model's setting)")
    ap.add_argument("--top-p", type=float, default=None,
                    help="nucleus share sampled from (default: the model's setting)")
    ap.add_argument("--out", default="moses_benchmark",
                    help="output prefix for .json, .md and _properties.png (default: "
                    "./moses_benchmark; the bundled model's are in molvae/pretrained/)")
    ap.add_argument("--kinds", nargs="+", default=["raw", "consistent"],
                    choices=["raw", "consistent"], help="which samples to measure")
    ap.add_argument("--readme", default=None, help="a markdown file whose benchmark block to "
                    "replace with the tables")
    ap.add_argument("--card", default=None, help="also replace the benchmark block of this "
                    "model card (e.g. molvae/pretrained/MODEL_CARD.md)")
    args = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    model = molvae.load(args.model, device=device)
    for key, value in (("temperature", args.temperature), ("grammar", args.grammar_mask),
                       ("top_p", args.top_p)):
        if value is not None:
            model.sampling = {**model.sampling, key: value}
    result = measure(model, args.n, args.seed, args.recon_n,
                     args.au_n, device, picture=Path(args.out + "_properties.png"),
                     kinds=tuple(args.kinds))
    result["wall_s"]["total"] = time.perf_counter() - t
    md = markdown(result, args.label)
    write(result, md, Path(args.out))
    for path in (args.readme, args.card):
        if path:
            update_readme(Path(path), md)
    print(json.dumps(result, indent=2), file=sys.stderr)
    print(md)


if __name__ == "__main__":
    main()
