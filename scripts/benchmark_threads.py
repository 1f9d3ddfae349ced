"""How many torch threads a command should use: one, every core, or ``auto`` (idle cores).

Each measurement runs in a fresh process with its thread count set before any work: training
steps of the bundled architecture on MOSES test molecules (batch 256), and sampling molecules
from the bundled model. Conditions: the machine as it is, and with ``--busy K`` extra
processes each spinning one core (another user's job). Every time is a ratio against one
thread under the same condition in the same run. Prints JSON and a markdown table.

    python scripts/benchmark_threads.py --busy 0 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

from benchmark_moses import cpu_name  # scripts/ is on sys.path when run as a script

from molvae.config import auto_threads, usable_cores


def _spin() -> None:  # pragma: no cover - a busy competitor
    while True:
        pass


def child(work: str, threads: int, steps: int, n: int) -> float:
    """Seconds of ``work`` at ``threads`` torch threads (this process only)."""
    import torch

    torch.set_num_threads(threads)
    import molvae
    if work == "sample":
        model = molvae.load()
        molvae.sample(model, 200, seed=1, consistent=False)  # warm-up
        t = time.perf_counter()
        molvae.sample(model, n, seed=0, consistent=False)
        return time.perf_counter() - t
    from molvae.config import ModelConfig, TrainConfig
    from molvae.data import collate, tokenize
    from molvae.metrics import load_moses
    from molvae.model import MolVAE, vae_loss
    data = tokenize(load_moses("test")[: 256 * (steps + 2)], num_workers=1)
    mc, tc = ModelConfig(vocab_size=len(data.vocab)), TrainConfig()
    net = MolVAE(mc)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(data), generator=g)[:256].numpy() for _ in range(steps + 2)]

    def step(idx) -> None:
        x, lengths = collate(data, idx)
        out = net(x, lengths, "teacher", generator=g)
        loss = vae_loss(out["logits"], x, out["mu"], out["logvar"], tc.beta, tc.free_bits)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
        opt.step()

    for idx in batches[:2]:  # warm-up
        step(idx)
    t = time.perf_counter()
    for idx in batches[2:]:
        step(idx)
    return time.perf_counter() - t


def measure(work: str, threads: int, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--child", work, "--threads", str(threads),
           "--steps", str(args.steps), "-n", str(args.n)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1],
                    help="extra spinning processes per condition (default 0 1)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("-n", type=int, default=2000, help="timed samples")
    ap.add_argument("--work", nargs="+", default=["train", "sample"], choices=["train", "sample"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(child(args.child, args.threads, args.steps, args.n))
        return
    cores = usable_cores()
    rows = []
    for busy in args.busy:
        spinners = [mp.Process(target=_spin, daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        try:
            time.sleep(2 if busy else 0)
            auto = auto_threads()  # what the CLI would pick now (load average lags ~1 min)
            for work in args.work:
                base = measure(work, 1, args)
                for threads in sorted({1, cores}):
                    sec = base if threads == 1 else measure(work, threads, args)
                    rows.append({"work": work, "busy": busy, "threads": threads,
                                 "seconds": round(sec, 3), "vs_1_thread": round(sec / base, 3),
                                 "auto_now": auto})
        finally:
            for p in spinners:
                p.kill()
    report = {"cpu": cpu_name(), "cores": cores, "load_avg_at_start": os.getloadavg()[0],
              "steps": args.steps, "n": args.n, "rows": rows}
    print(json.dumps(report, indent=2))
    print("\n| work | extra busy processes | threads | seconds | time vs 1 thread |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['work']} | {r['busy']} | {r['threads']} | {r['seconds']:.2f} | "
              f"{r['vs_1_thread']:.2f}x |")


if __name__ == "__main__":
    main()
