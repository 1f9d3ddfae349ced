"""molvae.train: run folder contents, exact resume, non-finite losses, Gumbel mixing."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import molvae
from molvae import ConfigError, DataFileError, TrainConfig, TrainingError
from molvae import checkpoint as ckpt
from molvae.model import Decoder
from molvae.readers import file_sha256

train_mod = importlib.import_module("molvae.train")  # `molvae.train` is the function

METRIC_NAMES = ["loss", "recon", "kl", "beta", "tau", "token_acc", "recon_exact",
                "active_units"]


def _metrics(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


# ------------------------------------------------------------------------------ run folder
def test_run_result(spec, trained_run):
    out, result = trained_run
    assert result.out_dir == out
    assert result.step == spec.train_steps
    assert result.stopped_by == "max_steps"
    assert math.isfinite(result.best_val_loss)
    assert set(result.last_metrics) >= {"loss", "recon", "kl", "token_acc", "recon_exact",
                                        "active_units"}


def test_run_folder_files(trained_run):
    out, _ = trained_run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.csv", "rejects.csv", "best.safetensors",
            "last.safetensors", "resume.pt"} <= names
    assert not [n for n in names if ".tmp" in n]


def test_config_json(spec, trained_run, train_csv, tiny_model_config):
    out, _ = trained_run
    run = json.loads((out / "config.json").read_text())
    vocab_size = len(run["vocab"]["symbols"]) + 3
    mc = run["model_config"]
    assert mc["vocab_size"] == vocab_size  # resolved, not the 0 placeholder
    assert mc["latent_dim"] == tiny_model_config.latent_dim == 8
    assert mc["max_len"] == tiny_model_config.max_len
    tc = run["train_config"]
    assert tc["max_steps"] == spec.train_steps and tc["batch_size"] == 32
    assert tc["beta"] == TrainConfig().beta  # defaults are written out, too
    assert run["seed"] == 0
    assert run["command"] == "pytest tiny run"
    assert set(run["versions"]) >= {"molvae", "torch", "rdkit", "selfies", "python"}
    assert run["versions"]["torch"] == torch.__version__
    d = run["data"]
    assert d["sha256"] == file_sha256(train_csv)
    assert Path(d["path"]) == train_csv.resolve()
    assert d["molecules"] == spec.train_rows and d["rejected"] == 1
    assert d["train"] + d["val"] == spec.train_rows
    assert run["vocab"]["constraints"]["C"] == 4


def test_metrics_csv(spec, trained_run):
    out, _ = trained_run
    rows = _metrics(out)
    with (out / "metrics.csv").open() as fh:
        header = next(csv.reader(fh))
    assert set(METRIC_NAMES) <= set(header)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    assert [int(r["step"]) for r in train_rows] == list(range(5, spec.train_steps + 1, 5))
    assert [int(r["step"]) for r in val_rows] == [15, 30]
    for r in train_rows:
        for k in ("loss", "recon", "kl", "beta", "tau", "token_acc"):
            assert math.isfinite(float(r[k])), (k, r)
        assert float(r["loss"]) >= float(r["recon"])
    for r in val_rows:
        for k in METRIC_NAMES:
            assert math.isfinite(float(r[k])), (k, r)
        assert 0.0 <= float(r["recon_exact"]) <= 1.0
        assert 0 <= float(r["active_units"]) <= 8
        assert 0.0 <= float(r["token_acc"]) <= 1.0
        assert 0.0 <= float(r["prior_consistent"]) <= 1.0  # the default val_samples
        assert r["prior_fcd"] == ""  # val_fcd is off by default
    # training makes progress even in 30 tiny steps
    assert float(train_rows[-1]["recon"]) < float(train_rows[0]["recon"])
    betas = [float(r["beta"]) for r in train_rows]
    assert betas == sorted(betas) and betas[0] > 0  # linear KL warm-up


def test_checkpoints(spec, trained_run):
    out, result = trained_run
    last = ckpt.load(out / "last.safetensors")
    best = ckpt.load(out / "best.safetensors")
    assert last.meta["step"] == spec.train_steps
    assert best.meta["best_val_loss"] == pytest.approx(result.best_val_loss)
    run = json.loads((out / "config.json").read_text())
    assert last.vocab.to_dict() == run["vocab"]
    for t in _state(out / "last.safetensors").values():
        assert torch.isfinite(t).all()
    state = ckpt.load_resume(out / "resume.pt")
    assert state["step"] == spec.train_steps and state["reason"] == "max_steps"


def test_rejects_csv(spec, trained_run):
    out, _ = trained_run
    with (out / "rejects.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    r = rows[0]
    assert int(r["line"]) == spec.bad_line
    assert r["input"] == spec.bad_smiles
    assert r["status"] == "invalid"
    assert "unparsable" in r["reason"]


# ------------------------------------------------------------------------------ resume
RESUME_KW = dict(val_every=10, checkpoint_every=10, log_every=5, val_recon_size=20,
                 gumbel_frac_start=0.3, gumbel_frac_end=0.3, kl_warmup_steps=25)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, train_csv, tiny_model_config, tiny_train_config,
                 session_cache):
    """Run A: 40 steps without a break (31 batches per epoch, so it crosses an epoch, and
    Gumbel batches are mixed in so every random stream matters)."""
    out = tmp_path_factory.mktemp("resume") / "a"
    res = molvae.train(train_csv, out, model_config=tiny_model_config,
                       train_config=tiny_train_config(max_steps=40, **RESUME_KW),
                       progress=False, cache_dir=session_cache, device="cpu", seed=5)
    assert res.step == 40 and res.epoch >= 1
    return out, res


def _assert_same_run(a: Path, ra, b: Path, rb, compare_train_rows: bool = True) -> None:
    assert ra.step == rb.step == 40
    assert ra.epoch == rb.epoch
    sa, sb = _state(a / "last.safetensors"), _state(b / "last.safetensors")
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    val_a = [r for r in _metrics(a) if r["split"] == "val"]
    val_b = [r for r in _metrics(b) if r["split"] == "val"]
    assert [r["step"] for r in val_a] == [r["step"] for r in val_b] == ["10", "20", "30", "40"]
    for ra_row, rb_row in zip(val_a, val_b):
        for k in ("loss", "recon", "kl", "token_acc", "recon_exact", "active_units"):
            assert ra_row[k] == rb_row[k], (k, ra_row["step"])
    if compare_train_rows:
        train_a = [(r["step"], r["loss"]) for r in _metrics(a) if r["split"] == "train"]
        train_b = [(r["step"], r["loss"]) for r in _metrics(b) if r["split"] == "train"]
        assert train_a == train_b
    assert ra.best_val_loss == rb.best_val_loss


def test_resume_is_exact(tmp_path, straight_run, train_csv, tiny_model_config,
                         tiny_train_config, session_cache):
    """40 steps straight == 20 steps, stop, resume to 40."""
    a, ra = straight_run
    b = tmp_path / "b"
    rb1 = molvae.train(train_csv, b, train_config=tiny_train_config(max_steps=20, **RESUME_KW),
                       model_config=tiny_model_config, progress=False,
                       cache_dir=session_cache, device="cpu", seed=5)
    assert rb1.step == 20 and rb1.epoch == 0
    rb = molvae.train(train_csv, b, resume=True, progress=False, cache_dir=session_cache,
                      device="cpu", train_config=TrainConfig(max_steps=40))
    _assert_same_run(a, ra, b, rb)
    # resume keeps the run's settings: the config file is the original one
    run_b = json.loads((b / "config.json").read_text())
    assert run_b["seed"] == 5 and run_b["train_config"]["gumbel_frac_end"] == 0.3


def test_cosine_lr_is_applied_and_can_be_added_on_resume(tmp_path, train_csv,
                                                         tiny_model_config, tiny_train_config,
                                                         session_cache):
    """A constant-lr run resumed with a cosine anneal: the lr column follows lr_at, the change is
    recorded in config.json, and a later resume without schedule settings keeps it."""
    out = tmp_path / "run"
    kw = dict(log_every=1, val_every=100, checkpoint_every=100, lr_schedule="constant")
    molvae.train(train_csv, out, model_config=tiny_model_config, progress=False,
                 train_config=tiny_train_config(max_steps=4, lr=2e-3, **kw),
                 cache_dir=session_cache, device="cpu")
    anneal = dict(lr_schedule="cosine", lr_decay_start=5, lr_decay_steps=4, lr_final=1e-4)
    run = json.loads((out / "config.json").read_text())
    molvae.train(train_csv, out, resume=True, progress=False, cache_dir=session_cache,
                 device="cpu", train_config=TrainConfig(**{**run["train_config"], **anneal,
                                                            "max_steps": 8}))
    run = json.loads((out / "config.json").read_text())
    was = {"lr_schedule": "constant", "lr_decay_start": 12500, "lr_decay_steps": 7500,
           "lr_final": 5e-5}  # the settings the anneal replaced (TrainConfig's defaults)
    assert run["lr_schedule_changes"] == [{"step": 4, **anneal, "was": was}]
    assert {k: run["train_config"][k] for k in anneal} == anneal
    assert run["train_config"]["lr"] == 2e-3  # everything else is the run's own
    # a plain resume (as the CLI builds it from config.json) keeps the anneal
    molvae.train(train_csv, out, resume=True, progress=False, cache_dir=session_cache,
                 device="cpu", train_config=TrainConfig(**{**run["train_config"],
                                                            "max_steps": 11}))
    tc = TrainConfig(**run["train_config"])
    rows = [r for r in _metrics(out) if r["split"] == "train"]
    assert [int(r["step"]) for r in rows] == list(range(1, 12))
    for r in rows:  # the row of step s logs the lr that step s (index s - 1) used
        assert float(r["lr"]) == pytest.approx(tc.lr_at(int(r["step"]) - 1), rel=1e-5)
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[:6] == [2e-3] * 6 and lrs[-2] == lrs[-1] == pytest.approx(1e-4)
    assert len(json.loads((out / "config.json").read_text())["lr_schedule_changes"]) == 1
    # a warm restart: a new peak lr that anneals again from the current step
    restart = dict(lr=1e-3, lr_decay_start=11, lr_decay_steps=2)
    run = json.loads((out / "config.json").read_text())
    molvae.train(train_csv, out, resume=True, progress=False, cache_dir=session_cache,
                 device="cpu", train_config=TrainConfig(**{**run["train_config"], **restart,
                                                            "max_steps": 13}))
    changes = json.loads((out / "config.json").read_text())["lr_schedule_changes"]
    assert changes[-1] == {"step": 11, **restart, "was": {"lr": 2e-3, "lr_decay_start": 5,
                                                          "lr_decay_steps": 4}}
    assert len(changes) == 2
    lrs = [float(r["lr"]) for r in _metrics(out) if r["split"] == "train"]
    assert lrs[11] == pytest.approx(1e-3) and lrs[12] == pytest.approx((1e-3 + 1e-4) / 2)


def test_resume_after_interrupt_is_exact(tmp_path, monkeypatch, straight_run, train_csv,
                                         tiny_model_config, tiny_train_config,
                                         session_cache):
    """Ctrl-C in the middle of step 13 finishes that step, saves, and resuming continues
    exactly (13 is neither a checkpoint nor a validation step)."""
    a, ra = straight_run
    real = train_mod.vae_loss
    calls = {"train": 0}

    def ctrl_c_on_13(*args, **kwargs):
        if torch.is_grad_enabled():
            calls["train"] += 1
            if calls["train"] == 13:
                os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "vae_loss", ctrl_c_on_13)
    c = tmp_path / "c"
    handler_before = signal.getsignal(signal.SIGINT)
    rc1 = molvae.train(train_csv, c, train_config=tiny_train_config(max_steps=40, **RESUME_KW),
                       model_config=tiny_model_config, progress=False,
                       cache_dir=session_cache, device="cpu", seed=5)
    assert rc1.stopped_by == "interrupt" and rc1.step == 13
    state = ckpt.load_resume(c / "resume.pt")
    assert state["step"] == 13 and state["reason"] == "interrupt"
    assert signal.getsignal(signal.SIGINT) == handler_before  # handlers restored
    monkeypatch.setattr(train_mod, "vae_loss", real)
    rc = molvae.train(train_csv, c, resume=True, progress=False, cache_dir=session_cache,
                      device="cpu", train_config=TrainConfig(max_steps=40))
    _assert_same_run(a, ra, c, rc, compare_train_rows=False)


def test_separate_validation_file(tmp_path, train_csv, moses_smiles, tiny_model_config,
                                  tiny_train_config, session_cache):
    val = tmp_path / "val.smi"
    val.write_text("\n".join([*moses_smiles[1500:1540], "CC[Se]CC", "C1CC"]) + "\n")
    out = tmp_path / "withval"
    res = molvae.train(train_csv, out, val_path=val, model_config=tiny_model_config,
                       train_config=tiny_train_config(max_steps=4, val_every=4),
                       progress=False, cache_dir=session_cache, device="cpu")
    assert res.step == 4
    run = json.loads((out / "config.json").read_text())
    assert run["data"]["val_sha256"] == file_sha256(val)
    assert run["data"]["val"] == 40 and run["data"]["train"] == run["data"]["molecules"]
    with (out / "rejects_val.csv").open() as fh:
        rejects = {int(r["line"]): r for r in csv.DictReader(fh)}
    assert sorted(rejects) == [41, 42]
    assert rejects[41]["status"] == "unknown_token" and "[Se]" in rejects[41]["reason"]
    assert rejects[42]["status"] == "invalid"


def test_resume_without_run_is_an_error(tmp_path, train_csv):
    with pytest.raises(ConfigError, match="no run to resume"):
        molvae.train(train_csv, tmp_path / "empty", resume=True, progress=False,
                     cache_dir=tmp_path / "cache", device="cpu")


def test_training_into_existing_run_is_refused(tmp_path, trained_run, train_csv,
                                               tiny_model_config, tiny_train_config):
    out, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = (copy / "last.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        molvae.train(train_csv, copy, model_config=tiny_model_config,
                     train_config=tiny_train_config(), progress=False,
                     cache_dir=tmp_path / "cache", device="cpu")
    assert (copy / "last.safetensors").read_bytes() == before


def test_missing_data_file(tmp_path, tiny_model_config, tiny_train_config):
    with pytest.raises(DataFileError, match="not found"):
        molvae.train(tmp_path / "none.csv", tmp_path / "out", model_config=tiny_model_config,
                     train_config=tiny_train_config(), progress=False,
                     cache_dir=tmp_path / "cache", device="cpu")


def test_too_few_molecules(tmp_path, tiny_model_config, tiny_train_config):
    p = tmp_path / "one.smi"
    p.write_text("CCO\nC1CC\n")
    with pytest.raises(DataFileError, match="fewer than 2"):
        molvae.train(p, tmp_path / "out", model_config=tiny_model_config,
                     train_config=tiny_train_config(), progress=False,
                     cache_dir=tmp_path / "cache", device="cpu")


# ------------------------------------------------------------------------------ non-finite
def test_nonfinite_loss_stops_with_last_good_checkpoint(tmp_path, monkeypatch, train_csv,
                                                        tiny_model_config, tiny_train_config,
                                                        session_cache):
    real = train_mod.vae_loss
    good_steps = 10
    calls = {"train": 0}

    def nan_after_ten(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():  # training steps; validation runs under no_grad
            calls["train"] += 1
            if calls["train"] > good_steps:
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(train_mod, "vae_loss", nan_after_ten)
    out = tmp_path / "nan"
    tc = tiny_train_config(max_steps=40, val_every=5, checkpoint_every=5, nonfinite_patience=3)
    with pytest.raises(TrainingError) as info:
        molvae.train(train_csv, out, model_config=tiny_model_config, train_config=tc,
                     progress=False, cache_dir=session_cache, device="cpu")
    msg = str(info.value)
    assert "non-finite" in msg and "3 steps" in msg and str(out) in msg
    assert calls["train"] == good_steps + 3  # stopped right after `patience` bad steps

    last = ckpt.load(out / "last.safetensors")
    assert last.meta["step"] == good_steps
    assert all(torch.isfinite(t).all() for t in _state(out / "last.safetensors").values())
    assert ckpt.load_resume(out / "resume.pt")["step"] == good_steps
    assert ckpt.load(out / "best.safetensors").meta["step"] <= good_steps
    for r in _metrics(out):
        assert math.isfinite(float(r["loss"])), r


def test_isolated_nonfinite_steps_are_skipped(tmp_path, monkeypatch, train_csv,
                                              tiny_model_config, tiny_train_config,
                                              session_cache):
    real = train_mod.vae_loss
    calls = {"train": 0}

    def every_third_nan(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["train"] += 1
            if calls["train"] % 3 == 0:
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(train_mod, "vae_loss", every_third_nan)
    res = molvae.train(train_csv, tmp_path / "skip", model_config=tiny_model_config,
                       train_config=tiny_train_config(max_steps=12, nonfinite_patience=2),
                       progress=False, cache_dir=session_cache, device="cpu")
    assert res.step == 12 and res.stopped_by == "max_steps"
    assert all(torch.isfinite(t).all()
               for t in _state(tmp_path / "skip" / "last.safetensors").values())


# ------------------------------------------------------------------------------ gumbel mixing
def test_gumbel_mixing_runs(tmp_path, monkeypatch, train_csv, tiny_model_config,
                            tiny_train_config, session_cache):
    real = Decoder.gumbel
    calls = []

    def spy(self, z, steps, tau, generator=None):
        calls.append(tau)
        return real(self, z, steps, tau, generator)

    monkeypatch.setattr(Decoder, "gumbel", spy)
    out = tmp_path / "gumbel"
    res = molvae.train(train_csv, out, model_config=tiny_model_config,
                       train_config=tiny_train_config(max_steps=20, val_every=10,
                                                      gumbel_frac_start=0.5,
                                                      gumbel_frac_end=0.5, tau_start=0.9,
                                                      tau_end=0.2, tau_anneal_steps=20),
                       progress=False, cache_dir=session_cache, device="cpu")
    assert res.step == 20 and res.stopped_by == "max_steps"
    assert 3 <= len(calls) <= 17  # about half of the 20 batches were free-running
    assert all(0.2 <= t <= 0.9 for t in calls)
    rows = [r for r in _metrics(out) if r["split"] == "train"]
    assert {float(r["gumbel_frac"]) for r in rows} == {0.5}
    taus = [float(r["tau"]) for r in rows]
    assert taus == sorted(taus, reverse=True) and taus[0] < 0.9
    for r in rows:
        assert math.isfinite(float(r["loss"]))
    assert all(torch.isfinite(t).all() for t in _state(out / "last.safetensors").values())


def test_seeded_runs_are_identical(tmp_path, train_csv, tiny_model_config, tiny_train_config,
                                   session_cache):
    kw = dict(model_config=tiny_model_config, progress=False, cache_dir=session_cache,
              device="cpu", train_config=tiny_train_config(max_steps=6, val_every=6))
    molvae.train(train_csv, tmp_path / "x", seed=1, **kw)
    molvae.train(train_csv, tmp_path / "y", seed=1, **kw)
    molvae.train(train_csv, tmp_path / "z", seed=2, **kw)
    x, y, z = (_state(tmp_path / n / "last.safetensors") for n in "xyz")
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not all(torch.equal(x[k], z[k]) for k in x)


def test_prior_quality_is_the_consistency_of_fixed_samples(trained_run):
    """The validation's prior metrics: the same latent points every time, the consistent
    share that decode() reports for them, and an FCD against the shipped test statistics."""
    from molvae.generate import decode, sample_latent
    from molvae.train import prior_quality
    model = ckpt.load(trained_run[0] / "last.safetensors")
    a = prior_quality(model, 64, seed=3, with_fcd=True)
    assert a["prior_consistent"] == prior_quality(model, 64, seed=3, with_fcd=False)[
        "prior_consistent"]
    z = sample_latent(model, 64, torch.Generator().manual_seed(3 + 4049))
    _, flags = decode(model, z, temperature=1.0, seed=3 + 4049, with_consistency=True)
    assert a["prior_consistent"] == sum(flags) / 64
    assert math.isnan(a["prior_fcd"]) or a["prior_fcd"] > 0
    assert prior_quality(model, 0, seed=3, with_fcd=True) == {}


def test_init_from_a_checkpoint_fine_tunes_it(trained_run, train_csv, tiny_train_config,
                                              session_cache, tmp_path):
    """--init: the checkpoint's weights, architecture and vocabulary, recorded in config.json;
    a model setting that contradicts the checkpoint is a clear error."""
    from molvae.config import ConfigError, ModelConfig
    start = ckpt.load(trained_run[0] / "last.safetensors")
    out = tmp_path / "tuned"
    molvae.train(train_csv, out, train_config=tiny_train_config(max_steps=3, lr=1e-9, lr_final=0.0,
                                                                val_every=3),
                 progress=False, cache_dir=session_cache, device="cpu",
                 init_from=trained_run[0] / "last.safetensors")
    tuned = ckpt.load(out / "last.safetensors")
    assert tuned.config == start.config and tuned.vocab.symbols == start.vocab.symbols
    for (k, a), b in zip(start.net.state_dict().items(), tuned.net.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=k)  # lr 1e-9: barely moved
    run = json.loads((out / "config.json").read_text())
    assert run["init_from"]["step"] == start.meta["step"]
    with pytest.raises(ConfigError, match="dec_hidden"):
        molvae.train(train_csv, tmp_path / "bad", model_config=ModelConfig(dec_hidden=32),
                     train_config=tiny_train_config(max_steps=1), progress=False,
                     cache_dir=session_cache, device="cpu",
                     init_from=trained_run[0] / "last.safetensors")


def test_cli_init_and_resume_are_exclusive(trained_run, train_csv, tmp_path, capsys):
    from molvae.cli import main
    code = main(["train", str(train_csv), "--out", str(tmp_path / "x"), "--resume",
                 "--init", str(trained_run[0])])
    err = capsys.readouterr().err
    assert code == 2 and "--init" in err and "Traceback" not in err
