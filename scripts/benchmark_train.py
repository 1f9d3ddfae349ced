"""Training benchmarks: throughput vs a bare GRU, padding waste, tokenizing, memory.

Prints a JSON object and a markdown table. Every speed figure is a ratio against a baseline
measured in the same run, or a rate with the hardware stated next to it.

    python scripts/benchmark_train.py                 # everything, on MOSES train
    python scripts/benchmark_train.py --skip-cold     # reuse the token cache, skip cold tokenizing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from molvae.config import ModelConfig, TrainConfig
from molvae.data import BucketBatcher, collate, load_dataset, tokenize
from molvae.model import MolVAE, vae_loss
from molvae.readers import read_molecules

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "data" / "moses" / "train.csv.gz"


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
          "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
    return hw


def time_steps(fn, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def bench_step(data, mc: ModelConfig, tc: TrainConfig, device: torch.device, steps: int) -> dict:
    """Full training step (collate, forward, loss, backward, clip, AdamW) vs bare nn.GRU
    forward+backward of the same shapes (encoder and decoder GRUs, random inputs)."""
    torch.manual_seed(0)
    net = MolVAE(mc).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr)
    batcher = BucketBatcher(data.lengths, tc.batch_size, 0, tc.bucket_batches)
    batches = batcher.epoch(0)[: steps + 3]
    gen = torch.Generator(device=device).manual_seed(0)
    it = iter(batches)
    n_mol = []

    def full_step() -> None:
        idx = next(it)
        x, lengths = collate(data, idx)
        x = x.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = net(x, lengths.to(device), "teacher", generator=gen)
            loss = vae_loss(out["logits"], x, out["mu"], out["logvar"], 0.1)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
        opt.step()
        n_mol.append(len(idx))
        if device.type == "cuda":
            torch.cuda.synchronize()

    t_full = time_steps(full_step, steps)
    mol_per_step = float(np.mean(n_mol[3:]))
    # the bare baseline uses the mean shape of the batches the full step saw
    width = int(round(np.mean([data.lengths[b].max() + 1 for b in batches[3:]])))
    b = tc.batch_size
    enc = torch.nn.GRU(mc.embed_dim, mc.enc_hidden, mc.enc_layers, batch_first=True,
                       bidirectional=True).to(device)
    dec = torch.nn.GRU(mc.embed_dim + mc.latent_dim, mc.dec_hidden, mc.dec_layers,
                       batch_first=True).to(device)
    xe = torch.randn(b, width - 1, mc.embed_dim, device=device, requires_grad=True)
    xd = torch.randn(b, width, mc.embed_dim + mc.latent_dim, device=device, requires_grad=True)

    def bare_step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            oe, _ = enc(xe)
            od, _ = dec(xd)
            loss = oe.float().sum() + od.float().sum()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    t_bare = time_steps(bare_step, steps)
    return {"step_s": t_full, "bare_gru_step_s": t_bare, "ratio_full_to_bare_gru":
            t_full / t_bare, "molecules_per_s": mol_per_step / t_full,
            "mean_batch_width": width, "params": sum(p.numel() for p in net.parameters())}


def bench_tokenize(sample_n: int, skip_cold: bool, cache_dir: Path) -> dict:
    raw = read_molecules(TRAIN)
    sub = raw.texts[:sample_n]
    t = time.perf_counter()
    tokenize(sub, num_workers=1)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    tokenize(sub, num_workers=os.cpu_count() or 1)
    tn = time.perf_counter() - t
    out = {"subset_molecules": len(sub), "subset_1proc_s": t1, "subset_allcores_s": tn,
           "parallel_speedup": t1 / tn, "subset_allcores_mol_per_s": len(sub) / tn}
    if not skip_cold:
        t = time.perf_counter()
        load_dataset(TRAIN, cache_dir=cache_dir, use_cache=False)
        out["full_cold_s"] = time.perf_counter() - t
    t = time.perf_counter()
    data, _ = load_dataset(TRAIN, cache_dir=None)  # the default cache, built if missing
    out["full_cached_reload_s"] = time.perf_counter() - t
    out["full_molecules"] = len(data)
    # an extrapolation from the subset rate, reported as such next to any measured cold time
    out["full_cold_extrapolated_s"] = len(data) / out["subset_allcores_mol_per_s"]
    out["full_rejected"] = len(data.rejects)
    out["token_bytes"] = int(data.tokens.nbytes + data.offsets.nbytes + data.lines.nbytes)
    return out


def bench_memory(steps: int) -> dict:
    """Peak resident memory of a real `molvae train` on the full MOSES train set."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "molvae", "-q", "train", str(TRAIN), "--out",
               f"{tmp}/run", "--max-steps", str(steps), "--val-every", str(steps),
               "--val-recon-size", "200"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"train_steps": steps, "peak_rss_gb": peak_kb / 1024 ** 2, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--tokenize-subset", type=int, default=50000)
    ap.add_argument("--skip-cold", action="store_true", help="skip the full cold tokenizing")
    ap.add_argument("--memory-steps", type=int, default=100)
    ap.add_argument("--large", action="store_true", help="also the 3x512-decoder config")
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res: dict = {"hardware": hardware(), "device": str(device)}
    with tempfile.TemporaryDirectory() as tmp:
        res["tokenize"] = bench_tokenize(args.tokenize_subset, args.skip_cold, Path(tmp))
    data, _ = load_dataset(TRAIN)
    tc = TrainConfig()
    mc = ModelConfig(vocab_size=len(data.vocab))
    res["padding_ratio"] = BucketBatcher(data.lengths, tc.batch_size, 0,
                                         tc.bucket_batches).padding_ratio()
    res["default"] = bench_step(data, mc, tc, device, args.steps)
    res["default"]["epoch_s_estimate"] = len(data) / res["default"]["molecules_per_s"]
    if args.large:
        big = ModelConfig(vocab_size=len(data.vocab), dec_layers=3, dec_hidden=512)
        res["large_3x512"] = bench_step(data, big, tc, device, args.steps)
        res["large_3x512"]["epoch_s_estimate"] = (len(data)
                                                  / res["large_3x512"]["molecules_per_s"])
    res["memory"] = bench_memory(args.memory_steps)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    tk, d = res["tokenize"], res["default"]
    rows = [
        ("training throughput, default config", f"{d['molecules_per_s']:.0f} molecules/s", ""),
        ("full step / bare nn.GRU fwd+bwd", f"{d['ratio_full_to_bare_gru']:.2f}x", "<= 1.5x"),
        ("padded tokens per real token", f"{res['padding_ratio']:.3f}", "<= 1.15"),
        (f"tokenize speedup, {tk['subset_molecules']} mols, all cores vs 1",
         f"{tk['parallel_speedup']:.2f}x", ">= 1.6x"),
        ("tokenize MOSES train, cold", f"{tk['full_cold_s']:.0f} s" if "full_cold_s" in tk
         else "skipped", ""),
        ("tokenize MOSES train, cached reload", f"{tk['full_cached_reload_s']:.1f} s", "< 10 s"),
        ("peak RSS training on MOSES train", f"{res['memory']['peak_rss_gb']:.2f} GB", "<= 3 GB"),
    ]
    if "large_3x512" in res:
        rows.insert(1, ("training throughput, 3x512 decoder",
                        f"{res['large_3x512']['molecules_per_s']:.0f} molecules/s", ""))
    print(f"\nhardware: {res['hardware']['cpu']}, {res['hardware']['cores']} cores, "
          f"device {device}\n")
    print("| measurement | result | target |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
