"""What a training run is, before its first step: settings, data and starting point.

A new run takes them from its arguments (and ``--init``'s checkpoint); a resumed one from its
folder (config.json and resume.pt), where only the stopping criteria and the learning-rate
schedule may change. :mod:`molvae.train` runs the loop on what this module resolves.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .config import ConfigError, ModelConfig, TrainConfig, from_dict, to_dict
from .data import TokenData, load_dataset, split_indices, write_rejects
from .readers import DataFileError
from .vocab import Vocab

log = logging.getLogger(__name__)

_LR_FIELDS = ("lr", "lr_schedule", "lr_decay_start", "lr_decay_steps", "lr_final")
RESUMABLE_SETTINGS = ("epochs", "max_steps", "max_time", *_LR_FIELDS)


@dataclass
class Plan:
    """A run's settings and starting point, as given (new run) or as recorded (resumed)."""

    mc: ModelConfig
    tc: TrainConfig
    seed: int
    data_path: str | Path
    val_path: str | Path | None
    smiles_column: str | None
    state: dict[str, Any] | None = None  # resume.pt of a resumed run
    run: dict[str, Any] | None = None  # config.json of a resumed run
    init: ckpt.Model | None = None  # the --init model of a new run
    lr_changed: dict[str, Any] = field(default_factory=dict)  # schedule changed on resume


@dataclass
class Datasets:
    """The tokenized molecules of a run: the training file, its training and validation
    parts (the validation file, when one is given) and their fingerprints."""

    data: TokenData
    data_sha: str
    train: TokenData
    val: TokenData
    val_sha: str | None


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


def resumed(out_dir: Path, data_path: str | Path | None, train_config: TrainConfig | None
            ) -> Plan:
    """The plan of the run in ``out_dir``; ``train_config`` (when given) supplies the
    stopping criteria and the learning-rate schedule (``RESUMABLE_SETTINGS``)."""
    run = _load_run_config(out_dir)
    tc = from_dict(TrainConfig, run["train_config"])
    lr_changed: dict[str, Any] = {}
    if train_config is not None:
        old_tc = tc
        tc = replace(tc, **{k: getattr(train_config, k) for k in RESUMABLE_SETTINGS})
        tc.validate()
        lr_changed = {k: getattr(tc, k) for k in _LR_FIELDS
                      if getattr(tc, k) != getattr(old_tc, k)}
    return Plan(from_dict(ModelConfig, run["model_config"]), tc, run["seed"],
                run["data"]["path"] if data_path is None else data_path,
                run["data"].get("val_path"), run["data"].get("smiles_column"),
                state=ckpt.load_resume(out_dir / ckpt.RESUME), run=run, lr_changed=lr_changed)


def new(out_dir: Path, data_path: str | Path, val_path: str | Path | None,
        model_config: ModelConfig | None, train_config: TrainConfig | None, seed: int,
        smiles_column: str | None, init_from: str | Path | None) -> Plan:
    """The plan of a new run in ``out_dir`` (which must not hold one already)."""
    mc = model_config or ModelConfig()
    tc = train_config or TrainConfig()
    init = None
    if init_from is not None:  # its architecture and vocabulary
        init, mc = _init_model(init_from, model_config)
    mc.validate()
    tc.validate()
    if (out_dir / ckpt.RESUME).exists():
        raise ConfigError(f"{out_dir} already holds a run; use --resume to continue it or "
                          "choose another --out")
    return Plan(mc, tc, seed, data_path, val_path, smiles_column, init=init)


def datasets(plan: Plan, out_dir: Path, progress: bool, cache_dir: str | Path | None
             ) -> Datasets:
    """Tokenize the run's molecules (in the vocabulary of the run or of ``--init``; a new
    vocabulary otherwise) and split off the validation part; rejects.csv lists every row
    that was not used."""
    vocab = Vocab.from_dict(plan.state["vocab"]) if plan.state else None
    if plan.init is not None:
        vocab = plan.init.vocab
    mc, tc = plan.mc, plan.tc

    def load(path: str | Path, vocab: Vocab | None) -> tuple[TokenData, str]:
        return load_dataset(path, vocab=vocab, max_len=mc.max_len, keep_stereo=mc.keep_stereo,
                            largest_fragment=mc.largest_fragment,
                            smiles_column=plan.smiles_column, num_workers=tc.num_workers,
                            progress=progress, cache_dir=cache_dir)

    data, data_sha = load(plan.data_path, vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rejects(out_dir / "rejects.csv", data.rejects)
    if data.rejects:
        log.warning("%d rows of %s rejected; see %s", len(data.rejects), plan.data_path,
                    out_dir / "rejects.csv")
    val_sha = None
    if plan.val_path is not None:
        val, val_sha = load(plan.val_path, data.vocab)
        write_rejects(out_dir / "rejects_val.csv", val.rejects)
        train_data = data
    else:
        if len(data) < 2:
            raise DataFileError(f"{plan.data_path}: fewer than 2 usable molecules")
        tr_idx, va_idx = split_indices(len(data), tc.val_fraction, tc.val_max, plan.seed)
        train_data, val = data.subset(tr_idx), data.subset(va_idx)
    if len(train_data) == 0 or len(val) == 0:
        raise DataFileError(f"{plan.data_path}: no usable molecules to train on")
    return Datasets(data, data_sha, train_data, val, val_sha)


def record(plan: Plan, d: Datasets, out_dir: Path, device: str, command: str | None,
           step: int) -> None:
    """Write config.json of a new run; for a resumed one whose learning-rate schedule
    changed, record the change (so that a later --resume keeps the new schedule) with the
    settings it replaced (so that the schedule any earlier step used can be rebuilt)."""
    if plan.run is not None:
        if plan.lr_changed:
            log.info("learning-rate schedule changed at step %d: %s", step, plan.lr_changed)
            old = from_dict(TrainConfig, plan.run["train_config"])  # before the change
            plan.run["train_config"] = to_dict(plan.tc)
            plan.run.setdefault("lr_schedule_changes", []).append(
                {"step": step, **plan.lr_changed,
                 "was": {k: getattr(old, k) for k in plan.lr_changed}})
            (out_dir / "config.json").write_text(json.dumps(plan.run, indent=2))
        return
    run_info = {
        "model_config": to_dict(plan.mc), "train_config": to_dict(plan.tc), "seed": plan.seed,
        "device": device, "versions": ckpt.versions(), "command": command or " ".join(sys.argv),
        "data": {"path": str(Path(plan.data_path).resolve()), "sha256": d.data_sha,
                 "molecules": len(d.data), "rejected": len(d.data.rejects),
                 "train": len(d.train), "val": len(d.val),
                 "val_path": str(Path(plan.val_path).resolve()) if plan.val_path else None,
                 "val_sha256": d.val_sha, "smiles_column": plan.smiles_column},
        "vocab": d.data.vocab.to_dict(),
    }
    if plan.init is not None:
        run_info["init_from"] = {"path": str(plan.init.path), "step": plan.init.meta.get("step")}
    (out_dir / "config.json").write_text(json.dumps(run_info, indent=2))
