"""The training loop: schedules, AMP, validation, checkpoints, exact resume, logging."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import chem, train_setup
from .config import (  # resolve_device, default_num_threads: re-exported from their old home
    ModelConfig,
    TrainConfig,
    default_num_threads,
    resolve_device,
)
from .data import BucketBatcher, TokenData, collate
from .model import MolVAE, vae_loss

__all__ = ["train", "TrainingError", "TrainResult", "resolve_device", "default_num_threads",
           "METRIC_COLUMNS"]

log = logging.getLogger(__name__)
METRIC_COLUMNS = ["step", "epoch", "split", "loss", "recon", "kl", "beta", "tau", "gumbel_frac",
                  "token_acc", "ce_token", "recon_exact", "active_units", "prior_consistent",
                  "prior_fcd", "lr", "mol_per_s", "elapsed_s"]


class TrainingError(RuntimeError):
    """Training could not go on (e.g. the loss stayed non-finite); the message says why."""


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    epoch: int
    best_val_loss: float
    stopped_by: str  # "epochs", "max_steps", "max_time", "interrupt"
    last_metrics: dict[str, float]


class MetricsLog:
    """metrics.csv (always) and TensorBoard (when installed)."""

    def __init__(self, out_dir: Path, resume_step: int | None):
        self.path = out_dir / "metrics.csv"
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.exists():
            with self.path.open() as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        self.fh = self.path.open("w", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore",
                                     lineterminator="\n")
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.fh.flush()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                              for k, v in row.items()})
        self.fh.flush()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def validate(net: MolVAE, data: TokenData, tc: TrainConfig, step: int, device: torch.device,
             seed: int, progress: bool = False) -> dict[str, float]:
    """Loss, recon CE, KL, token accuracy, active units on the validation set, and the exact
    reconstruction rate (greedy from the mean) on a fixed subset of it."""
    net.eval()
    gen = torch.Generator(device=device).manual_seed(seed + 7919)
    batcher = BucketBatcher(data.lengths, tc.batch_size, seed, tc.bucket_batches)
    tot: dict[str, float] = {"loss": 0.0, "recon": 0.0, "kl": 0.0, "acc": 0.0, "ce": 0.0}
    n_mol = n_tok = 0
    mus = []
    # the loss at the final beta, so that validation losses compare across the KL schedule
    # (the scheduled beta would make early, barely-regularised checkpoints look best)
    beta = tc.beta
    for idx in batcher.epoch(0):
        x, lengths = collate(data, idx)
        x = _to_device(x, device)
        with _autocast(device, tc.amp):
            out = net(x, lengths.to(device), "teacher", generator=gen)
            parts = vae_loss(out["logits"], x, out["mu"], out["logvar"], beta, tc.free_bits)
        b, t = len(idx), int((x != 0).sum())
        tot["recon"] += float(parts["recon"]) * b
        tot["kl"] += float(parts["kl"]) * b
        tot["acc"] += float(parts["token_acc"]) * t
        tot["ce"] += float(parts["ce_token"]) * t
        n_mol += b
        n_tok += t
        mus.append(out["mu"].float().cpu())
    mu = torch.cat(mus)
    active = int((mu.var(0) > 0.01).sum()) if len(mu) > 1 else 0
    recon, kl = tot["recon"] / n_mol, tot["kl"] / n_mol
    res = {"loss": recon + beta * kl, "recon": recon, "kl": kl, "token_acc": tot["acc"] / n_tok,
           "ce_token": tot["ce"] / n_tok, "active_units": float(active)}
    res["recon_exact"] = exact_reconstruction(net, data, tc.val_recon_size, device, seed)
    net.train()
    return res


@torch.no_grad()
def exact_reconstruction(net: MolVAE, data: TokenData, n: int, device: torch.device,
                         seed: int, batch_size: int = 500) -> float:
    """Fraction of molecules whose greedy decode from the posterior mean is the same molecule."""
    rng = np.random.default_rng([seed, 31337])
    idx = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    hits = 0
    was_training = net.training
    net.eval()
    for s in range(0, len(idx), batch_size):
        part = idx[s: s + batch_size]
        x, lengths = collate(data, part)
        mu, _ = net.encode(x.to(device), lengths.to(device))
        ids = net.decoder.generate(mu, net.cfg.max_len + 1, temperature=0.0).cpu().numpy()
        for row, i in zip(ids, part):
            target = chem.selfies_to_smiles(data.selfies(i))
            hits += target is not None and chem.selfies_to_smiles(data.vocab.decode(row)) == target
    net.train(was_training)
    return hits / max(len(idx), 1)


def prior_quality(model: ckpt.Model, n: int, seed: int, with_fcd: bool) -> dict[str, float]:
    """The grammar-consistent share of n prior samples (temperature 1, a fixed seed, so every
    validation draws the same latent points and noise) and, ``with_fcd``, the FCD/Test of the
    consistent ones against the shipped MOSES test statistics."""
    if n <= 0:
        return {}
    from .generate import decode, sample_latent
    gen = torch.Generator(device=model.device).manual_seed(seed + 4049)
    z = sample_latent(model, n, gen)
    smiles, flags = decode(model, z, temperature=1.0, seed=seed + 4049, with_consistency=True)
    out = {"prior_consistent": float(np.mean(flags))}
    if with_fcd:
        from .metrics import fcd
        kept = [s for s, ok in zip(smiles, flags) if ok]
        out["prior_fcd"] = fcd(kept, n_jobs=1) if len(kept) >= 2 else math.nan
    return out


class _Loop:
    """What a run carries from step to step (network, optimizer, random streams, position in
    the data, best validation loss) and what it does with it: one optimizer step, a
    validation, a checkpoint."""

    def __init__(self, plan: train_setup.Plan, d: train_setup.Datasets, dev: torch.device,
                 out_dir: Path, metrics: MetricsLog):
        mc, tc, seed = plan.mc, plan.tc, plan.seed
        self.tc, self.seed, self.dev, self.out_dir, self.metrics = tc, seed, dev, out_dir, metrics
        self.mc, self.vocab, self.val = mc, d.data.vocab, d.val
        self.data_fp = {"train_sha256": d.data_sha, "val_sha256": d.val_sha,
                        "train_molecules": len(d.train)}
        torch.manual_seed(seed)  # parameter init only; all later randomness uses `gen`
        self.net = MolVAE(mc).to(dev)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=tc.lr,
                                     weight_decay=tc.weight_decay)
        self.gen = torch.Generator(device=dev).manual_seed(seed)
        self.mode_rng = torch.Generator().manual_seed(seed + 1)
        self.step, self.epoch, self.batch_pos, self.best, self.elapsed_before = (
            0, 0, 0, math.inf, 0.0)
        if plan.init is not None:
            self.net.load_state_dict(plan.init.net.state_dict())
        if plan.state:
            st = plan.state
            self.net.load_state_dict(st["model"])
            self.opt.load_state_dict(st["optimizer"])
            self.gen.set_state(st["gen"])
            self.mode_rng.set_state(st["mode_rng"])
            self.step, self.epoch, self.batch_pos = st["step"], st["epoch"], st["batch_pos"]
            self.best, self.elapsed_before = st["best_val_loss"], st["elapsed_s"]
        self.last_val: dict[str, float] = {}
        self.schedule = (tc.beta_at(self.step), tc.tau_at(self.step),
                         tc.gumbel_frac_at(self.step))
        self.bad_in_row = 0
        self.t0 = time.monotonic()

    def elapsed(self, now: float | None = None) -> float:
        """Training seconds over every session of the run, up to ``now`` (monotonic)."""
        return self.elapsed_before + (time.monotonic() if now is None else now) - self.t0

    def model(self) -> ckpt.Model:
        return ckpt.Model(self.net, self.vocab, self.mc,
                          {"seed": self.seed, "data": self.data_fp, "step": self.step,
                           "epoch": self.epoch, "metrics": self.last_val})

    def save(self, reason: str) -> None:
        """last.safetensors and resume.pt."""
        was = self.net.training
        self.net.eval()
        ckpt.save(self.model(), self.out_dir / ckpt.LAST)
        ckpt.save_resume(self.out_dir / ckpt.RESUME, {
            "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
            "gen": self.gen.get_state(), "mode_rng": self.mode_rng.get_state(),
            "step": self.step, "epoch": self.epoch, "batch_pos": self.batch_pos,
            "best_val_loss": self.best, "elapsed_s": self.elapsed(),
            "vocab": self.vocab.to_dict(), "reason": reason})
        self.net.train(was)

    def validate(self) -> None:
        """A validation row in metrics.csv; best.safetensors when the loss is the lowest."""
        tc, step = self.tc, self.step
        res = validate(self.net, self.val, tc, step, self.dev, self.seed)
        res.update(prior_quality(self.model(), tc.val_samples, self.seed, tc.val_fcd))
        self.net.train()
        self.last_val = res
        self.metrics.write({"step": step, "epoch": self.epoch, "split": "val",
                            "beta": tc.beta_at(step), "tau": tc.tau_at(step),
                            "gumbel_frac": tc.gumbel_frac_at(step), "elapsed_s": self.elapsed(),
                            **res})
        if res["loss"] < self.best:
            self.best = res["loss"]
            ckpt.save(self.model(), self.out_dir / ckpt.BEST, {"best_val_loss": self.best})
        log.info("step %d val loss %.3f recon %.3f kl %.2f exact %.3f AU %d consistent %.3f%s",
                 step, res["loss"], res["recon"], res["kl"], res["recon_exact"],
                 res["active_units"], res.get("prior_consistent", math.nan),
                 f" FCD {res['prior_fcd']:.2f}" if "prior_fcd" in res else "")

    def train_step(self, data: TokenData, idx: np.ndarray) -> dict[str, torch.Tensor] | None:
        """One optimizer step on the molecules ``idx``: the loss parts, or None when the loss
        or the gradient was not finite and the step was skipped."""
        tc, step, dev = self.tc, self.step, self.dev
        x, lengths = collate(data, idx)
        x = _to_device(x, dev)
        beta, tau, gfrac = self.schedule = (tc.beta_at(step), tc.tau_at(step),
                                            tc.gumbel_frac_at(step))
        mode = "gumbel" if float(torch.rand(1, generator=self.mode_rng)) < gfrac else "teacher"
        with _autocast(dev, tc.amp):
            out = self.net(x, lengths.to(dev), mode, tau=tau, generator=self.gen)
            parts = vae_loss(out["logits"], x, out["mu"], out["logvar"], beta, tc.free_bits)
        self.opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(parts["loss"]))
        if finite:
            parts["loss"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), tc.grad_clip)
            finite = bool(torch.isfinite(gnorm))
        if finite:
            self.bad_in_row = 0
            for group in self.opt.param_groups:
                group["lr"] = tc.lr_at(step)
            self.opt.step()
        else:
            self._skipped()
        self.step += 1
        self.batch_pos += 1
        return parts if finite else None

    def _skipped(self) -> None:
        self.bad_in_row += 1
        self.opt.zero_grad(set_to_none=True)
        log.warning("step %d: non-finite loss or gradient, step skipped", self.step)
        if self.bad_in_row >= self.tc.nonfinite_patience:
            kept = ("the last good checkpoint is kept in " + str(self.out_dir)
                    if (self.out_dir / ckpt.LAST).exists() else "no checkpoint was written")
            raise TrainingError(
                f"loss was non-finite for {self.bad_in_row} steps in a row at step "
                f"{self.step}; stopped, {kept}. Try a lower --lr or a smaller --grad-clip.")

    def stop_reason(self, interrupted: bool) -> str | None:
        tc = self.tc
        if tc.max_steps is not None and self.step >= tc.max_steps:
            return "max_steps"
        if tc.max_time is not None and time.monotonic() - self.t0 >= tc.max_time:
            return "max_time"
        return "interrupt" if interrupted else None


class _TrainLog:
    """Running means of the training losses: a train row in metrics.csv and the progress
    bar's figures every ``log_every`` steps."""

    def __init__(self, loop: _Loop, bar: Any):
        self.loop, self.bar = loop, bar
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.sums: dict[str, float] = {}
        self.n = self.molecules = 0
        self.since = now

    def add(self, parts: dict[str, torch.Tensor] | None, molecules: int) -> None:
        """Count one step (``parts`` None: skipped) and write the row when one is due."""
        self.bar.update(1)
        if parts is not None:
            for k in ("loss", "recon", "kl", "token_acc", "ce_token"):
                self.sums[k] = self.sums.get(k, 0.0) + parts[k].item()
            self.n += 1
        self.molecules += molecules
        loop = self.loop
        if loop.step % loop.tc.log_every or not self.n:
            return
        now = time.monotonic()
        row = {k: v / self.n for k, v in self.sums.items()}
        rate = self.molecules / max(now - self.since, 1e-9)
        beta, tau, gfrac = loop.schedule
        loop.metrics.write({"step": loop.step, "epoch": loop.epoch, "split": "train",
                            "beta": beta, "tau": tau, "gumbel_frac": gfrac,
                            "lr": loop.opt.param_groups[0]["lr"], "mol_per_s": rate,
                            "elapsed_s": loop.elapsed(now), **row})
        self.bar.set_postfix(loss=f"{row['loss']:.2f}", rec=f"{row['recon']:.2f}",
                             kl=f"{row['kl']:.1f}", acc=f"{row['token_acc']:.3f}",
                             beta=f"{beta:.3g}", mol_s=f"{rate:.0f}", refresh=False)
        self._reset(now)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[dict[str, bool]]:
    """Ctrl-C (and SIGTERM) set ``flag``: the loop finishes the current step, saves, then
    stops; a second one interrupts at once. The old handlers come back on exit."""
    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True

    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread
            pass
    try:
        yield stop
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)


def _run_epochs(loop: _Loop, batcher: BucketBatcher, data: TokenData, stop: dict[str, bool],
                train_log: _TrainLog) -> str:
    """Train until the epochs are done or a stopping criterion holds; returns which."""
    tc = loop.tc
    while loop.epoch < tc.epochs:
        batches = batcher.epoch(loop.epoch)
        while loop.batch_pos < len(batches):
            reason = loop.stop_reason(stop["flag"])
            if reason:
                return reason
            idx = batches[loop.batch_pos]
            train_log.add(loop.train_step(data, idx), len(idx))
            if loop.step % tc.val_every == 0:
                loop.validate()
            if loop.step % tc.checkpoint_every == 0:
                loop.save("periodic")
        loop.epoch += 1
        loop.batch_pos = 0
    return "epochs"


def train(data_path: str | Path, out_dir: str | Path, *, val_path: str | Path | None = None,
          model_config: ModelConfig | None = None, train_config: TrainConfig | None = None,
          seed: int = 0, device: str = "auto", resume: bool = False,
          smiles_column: str | None = None, cache_dir: str | Path | None = None,
          progress: bool = True, command: str | None = None,
          init_from: str | Path | None = None) -> TrainResult:
    """Train a VAE on a molecule file; see README "Training" for the files it writes.

    ``init_from`` (a checkpoint or run folder) starts from that model's weights, with its
    architecture and vocabulary (molecules whose symbols it lacks are rejected) and a fresh
    optimizer: fine-tuning on new molecules, or continuing a model with another recipe.

    With ``resume=True`` the run continues from ``out_dir`` with its own settings, except that
    ``train_config`` (when given) supplies the stopping criteria and the learning-rate schedule
    (``RESUMABLE_SETTINGS``); pass the run's ``train_config`` from config.json with changes.
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    if resume:
        plan = train_setup.resumed(out_dir, data_path, train_config)
    else:
        plan = train_setup.new(out_dir, data_path, val_path, model_config, train_config, seed,
                               smiles_column, init_from)
    d = train_setup.datasets(plan, out_dir, progress, cache_dir)
    plan.mc = replace(plan.mc, vocab_size=len(d.data.vocab))  # the network's output size
    metrics = MetricsLog(out_dir, plan.state["step"] if plan.state else None)
    loop = _Loop(plan, d, dev, out_dir, metrics)
    train_setup.record(plan, d, out_dir, str(dev), command, loop.step)
    tc = plan.tc
    batcher = BucketBatcher(d.train.lengths, tc.batch_size, plan.seed, tc.bucket_batches)
    total_steps = tc.epochs * len(batcher)
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    stopped_by = "interrupt"
    with _stop_on_signals() as stop, tqdm(total=total_steps, initial=loop.step, desc="training",
                                          unit="step", file=sys.stderr, disable=not progress,
                                          dynamic_ncols=True) as bar:
        loop.t0 = time.monotonic()
        loop.net.train()
        try:
            stopped_by = _run_epochs(loop, batcher, d.train, stop, _TrainLog(loop, bar))
            if loop.step > 0 and stopped_by != "interrupt" and loop.step % tc.val_every != 0:
                loop.validate()
            loop.save(stopped_by)
        except KeyboardInterrupt:
            stopped_by = "interrupt"
            loop.save(stopped_by)
        finally:
            metrics.close()
    if stopped_by == "interrupt":
        log.warning("interrupted at step %d; state saved in %s (continue with --resume)",
                    loop.step, out_dir)
    return TrainResult(out_dir, loop.step, loop.epoch, loop.best, stopped_by, loop.last_val)
