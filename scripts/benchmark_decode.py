"""Per-call cost of molvae.decode and molvae.encode on small inputs (1, 10, 100 points), the
sizes an optimizer asks for thousands of times, against the raw network calls in the same run.

Baselines: for decode, one ``model.net.decoder.generate`` call on the same latent points (no
SELFIES/RDKit work); for encode, one ``model.net.encode`` call on the same molecules already
turned into padded ids (no RDKit standardization). Calls are alternated, repeated, and the
median per call is reported, so that a burst of other load on a shared machine does not decide
it. Latent points are the posterior means of the first MOSES training molecules (the region
an optimizer searches); the molecules, the seed and the hardware are stated in the output.

Prints a JSON object and a markdown table.

    python scripts/benchmark_decode.py                         # bundled model, CPU
    python scripts/benchmark_decode.py --sizes 1 10 100 200 --repeats 50 --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from benchmark_moses import cpu_name  # scripts/ is on sys.path when run as a script

import molvae
from molvae.data import pad_ids
from molvae.generate import prepare_inputs

MOSES_TRAIN = Path(__file__).resolve().parents[1] / "data" / "moses" / "train.csv.gz"


def read_molecules(n: int) -> list[str]:
    with gzip.open(MOSES_TRAIN, "rt") as fh:
        fh.readline()  # header
        return [fh.readline().strip() for _ in range(n)]


def time_calls(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function; the functions take turns in every round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def make_calls(model: molvae.Model, z: torch.Tensor, mols: list[str], x: torch.Tensor,
               lengths: torch.Tensor, temperature: float, seed: int
               ) -> dict[str, Callable[[], object]]:
    """The four timed calls on one input size: the public API and the raw network calls."""
    max_steps = model.config.max_len + 1

    def raw_decode() -> None:
        gen = torch.Generator(device=model.device).manual_seed(seed)
        with torch.no_grad():
            model.net.decoder.generate(z, max_steps, temperature=temperature,
                                       generator=gen).cpu()

    def raw_encode() -> None:
        with torch.no_grad():
            mu, _ = model.net.encode(x, lengths)  # (N, Z)
            mu.cpu()

    return {
        "decode": lambda: molvae.decode(model, z, temperature=temperature, seed=seed),
        "raw_decoder": raw_decode,
        "encode": lambda: molvae.encode(model, mols, errors="nan"),
        "raw_encoder": raw_encode,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: bundled)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--repeats", type=int, default=30, help="calls per size and function")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (decode's "
                    "default)")
    ap.add_argument("--seed", type=int, default=0, help="decode seed (temperature > 0)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads "
                    "(default: torch's own choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the JSON object here")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = molvae.load(args.model, device=args.device)
    model.net.eval()
    n_max = max(args.sizes)
    smiles = read_molecules(n_max)
    z_all = molvae.encode(model, smiles, errors="nan")  # (n_max, Z) posterior means
    # the raw encoder's input is built once, outside the timing: ids, then the padded layout
    ids = prepare_inputs(model, smiles).ids
    res: dict = {
        "hardware": {"cpu": cpu_name(), "cores": os.cpu_count(), "machine": platform.machine(),
                     "python": platform.python_version(), "torch": torch.__version__,
                     "device": args.device, "threads": torch.get_num_threads(),
                     # other work on a shared machine slows torch's multi-threaded ops most
                     "load_average_1min_start": os.getloadavg()[0]},
        "model": Path(model.path).name if model.path else None,
        "latent_dim": model.config.latent_dim,
        "molecules": f"first {n_max} rows of data/moses/train.csv.gz",
        "temperature": args.temperature, "seed": args.seed, "repeats": args.repeats,
        "sizes": [],
    }
    for n in args.sizes:
        z = z_all[:n].to(model.device)
        rows = [r for r in ids[:n] if r is not None]
        x, lengths = pad_ids(rows)
        x, lengths = x.to(model.device), lengths.to(model.device)
        calls = make_calls(model, z, smiles[:n], x, lengths, args.temperature, args.seed)
        time_calls(calls, 2)  # warm-up
        threads_before = torch.get_num_threads()
        med = time_calls(calls, args.repeats)
        valid = sum(s is not None for s in molvae.decode(model, z, temperature=args.temperature,
                                                          seed=args.seed))
        res["sizes"].append({
            "n": n,
            **{f"{k}_ms": 1000 * v for k, v in med.items()},
            "decode_over_raw": med["decode"] / med["raw_decoder"],
            "encode_over_raw": med["encode"] / med["raw_encoder"],
            "decode_valid": valid,
            "torch_threads_unchanged": torch.get_num_threads() == threads_before,
        })
    res["hardware"]["load_average_1min_end"] = os.getloadavg()[0]
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(json.dumps(res, indent=2) + "\n")
    hw = res["hardware"]
    print(f"\nhardware: {hw['cpu']}, {hw['cores']} cores, device {hw['device']}, "
          f"{hw['threads']} torch threads; torch {hw['torch']}; temperature {args.temperature}, "
          f"seed {args.seed}; median of {args.repeats} calls; load average "
          f"{hw['load_average_1min_start']:.1f} -> {hw['load_average_1min_end']:.1f}\n")
    print("| n | decode ms/call | raw decoder ms/call | decode / raw | encode ms/call "
          "| raw encoder ms/call | encode / raw |")
    print("|---|---|---|---|---|---|---|")
    for r in res["sizes"]:
        print(f"| {r['n']} | {r['decode_ms']:.2f} | {r['raw_decoder_ms']:.2f} | "
              f"{r['decode_over_raw']:.2f} | {r['encode_ms']:.2f} | {r['raw_encoder_ms']:.3f} | "
              f"{r['encode_over_raw']:.1f} |")


if __name__ == "__main__":
    main()
