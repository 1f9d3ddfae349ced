"""The training loop: schedules, AMP, validation, checkpoints, exact resume, logging."""

from __future__ import annotations

import csv
import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import chem
from .config import (  # resolve_device, default_num_threads: re-exported from their old home
    ConfigError,
    ModelConfig,
    TrainConfig,
    default_num_threads,
    from_dict,
    resolve_device,
    to_dict,
)
from .data import (
    BucketBatcher,
    DataFileError,
    TokenData,
    collate,
    load_dataset,
    split_indices,
    write_rejects,
)
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


_LR_FIELDS = ("lr", "lr_schedule", "lr_decay_start", "lr_decay_steps", "lr_final")
RESUMABLE_SETTINGS = ("epochs", "max_steps", "max_time", *_LR_FIELDS)


def _init_model(path: str | Path, model_config: ModelConfig | None
                ) -> tuple[ckpt.Model, ModelConfig]:
    """The model to start from and its architecture; a model_config that disagrees with the
    checkpoint's architecture is an error (the weights could not be loaded into it)."""
    init = ckpt.load(path)
    mc = init.config
    if model_config is not None:
        diff = [f.name for f in fields(ModelConfig)
                if getattr(model_config, f.name) != getattr(mc, f.name) and f.name != "vocab_size"]
        if diff:
            raise ConfigError(f"--init {path}: the checkpoint's architecture is fixed; these "
                              f"model settings differ from it: {', '.join(diff)}")
    return init, mc


def _load_run_config(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "config.json"
    if not path.exists():
        raise ConfigError(f"{out_dir}: no config.json, so there is no run to resume")
    return json.loads(path.read_text())


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
    state: dict[str, Any] | None = None
    lr_changed: dict[str, Any] = {}
    if resume:
        run = _load_run_config(out_dir)
        mc = from_dict(ModelConfig, run["model_config"])
        tc = from_dict(TrainConfig, run["train_config"])
        if train_config is not None:  # stopping criteria and the lr schedule may change
            old_tc = tc
            tc = replace(tc, **{k: getattr(train_config, k) for k in RESUMABLE_SETTINGS})
            tc.validate()
            lr_changed = {k: getattr(tc, k) for k in _LR_FIELDS
                          if getattr(tc, k) != getattr(old_tc, k)}
        seed = run["seed"]
        data_path = run["data"]["path"] if data_path is None else data_path
        val_path = run["data"].get("val_path")
        smiles_column = run["data"].get("smiles_column")
        state = ckpt.load_resume(out_dir / ckpt.RESUME)
    else:
        mc = model_config or ModelConfig()
        tc = train_config or TrainConfig()
        if init_from is not None:  # its architecture and vocabulary
            init, mc = _init_model(init_from, model_config)
        mc.validate()
        tc.validate()
        if (out_dir / ckpt.RESUME).exists():
            raise ConfigError(f"{out_dir} already holds a run; use --resume to continue it or "
                              "choose another --out")
    from .vocab import Vocab
    vocab = Vocab.from_dict(state["vocab"]) if state else None
    if init_from is not None and not resume:
        vocab = init.vocab
    data, data_sha = load_dataset(data_path, vocab=vocab, max_len=mc.max_len,
                                  keep_stereo=mc.keep_stereo,
                                  largest_fragment=mc.largest_fragment,
                                  smiles_column=smiles_column, num_workers=tc.num_workers,
                                  progress=progress, cache_dir=cache_dir)
    vocab = data.vocab
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rejects(out_dir / "rejects.csv", data.rejects)
    if data.rejects:
        log.warning("%d rows of %s rejected; see %s", len(data.rejects), data_path,
                    out_dir / "rejects.csv")
    val_sha = None
    if val_path is not None:
        val, val_sha = load_dataset(val_path, vocab=vocab, max_len=mc.max_len,
                                    keep_stereo=mc.keep_stereo,
                                    largest_fragment=mc.largest_fragment,
                                    smiles_column=smiles_column, num_workers=tc.num_workers,
                                    progress=progress, cache_dir=cache_dir)
        write_rejects(out_dir / "rejects_val.csv", val.rejects)
        train_data = data
    else:
        if len(data) < 2:
            raise DataFileError(f"{data_path}: fewer than 2 usable molecules")
        tr_idx, va_idx = split_indices(len(data), tc.val_fraction, tc.val_max, seed)
        train_data, val = data.subset(tr_idx), data.subset(va_idx)
    if len(train_data) == 0 or len(val) == 0:
        raise DataFileError(f"{data_path}: no usable molecules to train on")
    mc = replace(mc, vocab_size=len(vocab))

    torch.manual_seed(seed)  # parameter init only; all later randomness uses `gen`
    net = MolVAE(mc).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    gen = torch.Generator(device=dev).manual_seed(seed)
    mode_rng = torch.Generator().manual_seed(seed + 1)
    step, epoch, batch_pos, best, elapsed_before = 0, 0, 0, math.inf, 0.0
    if init_from is not None and not resume:
        net.load_state_dict(init.net.state_dict())
    if state:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["gen"])
        mode_rng.set_state(state["mode_rng"])
        step, epoch, batch_pos = state["step"], state["epoch"], state["batch_pos"]
        best, elapsed_before = state["best_val_loss"], state["elapsed_s"]

    run_info = {
        "model_config": to_dict(mc), "train_config": to_dict(tc), "seed": seed,
        "device": str(dev), "versions": ckpt.versions(), "command": command or " ".join(sys.argv),
        "data": {"path": str(Path(data_path).resolve()), "sha256": data_sha,
                 "molecules": len(data), "rejected": len(data.rejects),
                 "train": len(train_data), "val": len(val),
                 "val_path": str(Path(val_path).resolve()) if val_path else None,
                 "val_sha256": val_sha, "smiles_column": smiles_column},
        "vocab": vocab.to_dict(),
    }
    if init_from is not None and not resume:
        run_info["init_from"] = {"path": str(init.path), "step": init.meta.get("step")}
    if not resume:
        (out_dir / "config.json").write_text(json.dumps(run_info, indent=2))
    elif lr_changed:  # record it, so that a later --resume keeps the new schedule
        log.info("learning-rate schedule changed at step %d: %s", step, lr_changed)
        run["train_config"] = to_dict(tc)
        run.setdefault("lr_schedule_changes", []).append({"step": step, **lr_changed})
        (out_dir / "config.json").write_text(json.dumps(run, indent=2))
    data_fp = {"train_sha256": data_sha, "val_sha256": val_sha, "train_molecules": len(train_data)}

    metrics = MetricsLog(out_dir, step if state else None)
    batcher = BucketBatcher(train_data.lengths, tc.batch_size, seed, tc.bucket_batches)
    steps_per_epoch = len(batcher)
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    last_val: dict[str, float] = {}

    def make_model() -> ckpt.Model:
        return ckpt.Model(net, vocab, mc, {"seed": seed, "data": data_fp, "step": step,
                                           "epoch": epoch, "metrics": last_val})

    def save_all(reason: str) -> None:
        was = net.training
        net.eval()
        ckpt.save(make_model(), out_dir / ckpt.LAST)
        ckpt.save_resume(out_dir / ckpt.RESUME, {
            "model": net.state_dict(), "optimizer": opt.state_dict(),
            "gen": gen.get_state(), "mode_rng": mode_rng.get_state(), "step": step,
            "epoch": epoch, "batch_pos": batch_pos, "best_val_loss": best,
            "elapsed_s": elapsed_before + (time.monotonic() - t0), "vocab": vocab.to_dict(),
            "reason": reason})
        net.train(was)

    def run_validation() -> None:
        nonlocal best, last_val
        res = validate(net, val, tc, step, dev, seed)
        res.update(prior_quality(make_model(), tc.val_samples, seed, tc.val_fcd))
        net.train()
        last_val = res
        metrics.write({"step": step, "epoch": epoch, "split": "val", "beta": tc.beta_at(step),
                       "tau": tc.tau_at(step), "gumbel_frac": tc.gumbel_frac_at(step),
                       "elapsed_s": elapsed_before + time.monotonic() - t0, **res})
        if res["loss"] < best:
            best = res["loss"]
            ckpt.save(make_model(), out_dir / ckpt.BEST, {"best_val_loss": best})
        log.info("step %d val loss %.3f recon %.3f kl %.2f exact %.3f AU %d consistent %.3f%s",
                 step, res["loss"], res["recon"], res["kl"], res["recon_exact"],
                 res["active_units"], res.get("prior_consistent", math.nan),
                 f" FCD {res['prior_fcd']:.2f}" if "prior_fcd" in res else "")

    # Ctrl-C (and SIGTERM) finish the current step, save, then stop
    stop = {"flag": False}

    def _on_signal(signum: int, frame: Any) -> None:
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True

    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            handlers[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread
            pass

    t0 = time.monotonic()
    net.train()
    bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    acc: dict[str, float] = {}
    acc_n = acc_mol = 0
    t_log = time.monotonic()
    bad_in_row = 0
    stopped_by = "epochs"
    try:
        while epoch < tc.epochs:
            batches = batcher.epoch(epoch)
            while batch_pos < len(batches):
                if tc.max_steps is not None and step >= tc.max_steps:
                    stopped_by = "max_steps"
                    break
                if tc.max_time is not None and time.monotonic() - t0 >= tc.max_time:
                    stopped_by = "max_time"
                    break
                if stop["flag"]:
                    stopped_by = "interrupt"
                    break
                idx = batches[batch_pos]
                x, lengths = collate(train_data, idx)
                x = _to_device(x, dev)
                beta, tau, gfrac = tc.beta_at(step), tc.tau_at(step), tc.gumbel_frac_at(step)
                mode = "gumbel" if float(torch.rand(1, generator=mode_rng)) < gfrac else "teacher"
                with _autocast(dev, tc.amp):
                    out = net(x, lengths.to(dev), mode, tau=tau, generator=gen)
                    parts = vae_loss(out["logits"], x, out["mu"], out["logvar"], beta,
                                     tc.free_bits)
                loss = parts["loss"]
                opt.zero_grad(set_to_none=True)
                finite = bool(torch.isfinite(loss))
                if finite:
                    loss.backward()
                    gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
                    finite = bool(torch.isfinite(gnorm))
                if not finite:
                    bad_in_row += 1
                    opt.zero_grad(set_to_none=True)
                    log.warning("step %d: non-finite loss or gradient, step skipped", step)
                    if bad_in_row >= tc.nonfinite_patience:
                        kept = ("the last good checkpoint is kept in " + str(out_dir)
                                if (out_dir / ckpt.LAST).exists() else "no checkpoint was written")
                        raise TrainingError(
                            f"loss was non-finite for {bad_in_row} steps in a row at step {step}; "
                            f"stopped, {kept}. Try a lower --lr or a smaller --grad-clip.")
                else:
                    bad_in_row = 0
                    for group in opt.param_groups:
                        group["lr"] = tc.lr_at(step)
                    opt.step()
                step += 1
                batch_pos += 1
                if finite:
                    for k in ("loss", "recon", "kl", "token_acc", "ce_token"):
                        acc[k] = acc.get(k, 0.0) + parts[k].item()
                    acc_n += 1
                acc_mol += len(idx)
                bar.update(1)
                if step % tc.log_every == 0 and acc_n:
                    now = time.monotonic()
                    row = {k: v / acc_n for k, v in acc.items()}
                    rate = acc_mol / max(now - t_log, 1e-9)
                    metrics.write({"step": step, "epoch": epoch, "split": "train", "beta": beta,
                                   "tau": tau, "gumbel_frac": gfrac,
                                   "lr": opt.param_groups[0]["lr"], "mol_per_s": rate,
                                   "elapsed_s": elapsed_before + now - t0, **row})
                    bar.set_postfix(loss=f"{row['loss']:.2f}", rec=f"{row['recon']:.2f}",
                                    kl=f"{row['kl']:.1f}", acc=f"{row['token_acc']:.3f}",
                                    beta=f"{beta:.3g}", mol_s=f"{rate:.0f}", refresh=False)
                    acc, acc_n, acc_mol, t_log = {}, 0, 0, now
                if step % tc.val_every == 0:
                    run_validation()
                if step % tc.checkpoint_every == 0:
                    save_all("periodic")
            else:
                epoch += 1
                batch_pos = 0
                continue
            break
        if step > 0 and stopped_by != "interrupt" and step % tc.val_every != 0:
            run_validation()
        save_all(stopped_by)
    except KeyboardInterrupt:
        stopped_by = "interrupt"
        save_all(stopped_by)
    finally:
        bar.close()
        metrics.close()
        for sig, h in handlers.items():
            signal.signal(sig, h)
    if stopped_by == "interrupt":
        log.warning("interrupted at step %d; state saved in %s (continue with --resume)",
                    step, out_dir)
    return TrainResult(out_dir, step, epoch, best, stopped_by, last_val)
