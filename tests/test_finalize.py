"""scripts/finalize_default.py: the filter-failure breakdown and the model card it writes."""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import load_script

import molvae

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def finalize():
    return load_script("finalize_default")


def test_filter_breakdown_counts_kinds_and_patterns(finalize):
    samples = ["C1CCCCCCC1", "CP(C)C", "c1ccccc1", None, "O=Cc1ccccc1",
               "C1CCCCCCC1[N+](C)(C)C"]
    out = finalize.filter_breakdown(samples)
    assert out["valid"] == 5
    assert out["kinds"] == pytest.approx({
        "fails the filters": 0.8, "ring of 8+ atoms": 0.4, "charged atom": 0.2,
        "atom other than C, N, S, O, F, Cl, Br, H": 0.2, "any MCF pattern": 0.2})
    assert out["patterns"] == pytest.approx({"MCF MCF7": 0.2})


def test_model_card_shows_the_breakdown_and_the_lr_schedule(finalize, trained_run, tmp_path):
    """The card rendered from the shipped report plus a breakdown, for a run whose config
    has a cosine anneal."""
    run, _ = trained_run
    copy = tmp_path / "run"
    copy.mkdir()
    cfg = json.loads((run / "config.json").read_text())
    cfg["train_config"].update(lr_schedule="cosine", lr_decay_start=12500, lr_decay_steps=7500,
                               lr_final=5e-5)
    (copy / "config.json").write_text(json.dumps(cfg))
    for name in ("metrics.csv", "last.safetensors"):
        (copy / name).write_bytes((run / name).read_bytes())
    report = json.loads((ROOT / "molvae" / "pretrained" / "moses_default.json").read_text())
    report["filter_failures"] = {"valid": 5000, "kinds": {"fails the filters": 0.3,
                                                          "ring of 8+ atoms": 0.17},
                                 "patterns": {"MCF MCF1": 0.05}}
    card = finalize.model_card(report, copy)
    assert "| ring of 8+ atoms | 0.170 |" in card and "| MCF MCF1 | 0.050 |" in card
    assert "5,000 valid samples" in card
    assert "until step 12,500, then a cosine anneal to 5e-05 over 7,500 steps" in card
    assert "changed on resume" not in card
    # a warm restart recorded on resume is named with its step and values
    report["step"] = 6000  # a checkpoint between the two changes below
    cfg["lr_schedule_changes"] = [{"step": 3000, "lr": 3e-4, "lr_decay_start": 3000,
                                   "was": {"lr": 1e-3, "lr_decay_start": 12500}}]
    (copy / "config.json").write_text(json.dumps(cfg))
    card = finalize.model_card(report, copy)
    assert "changed on resume at step 3,000: lr 0.0003, lr_decay_start 3000)" in card
    # a change after the checkpoint's step is undone from what it replaced ...
    cfg["train_config"].update(lr_schedule="cosine", lr_decay_start=9000)
    cfg["lr_schedule_changes"].append({"step": 9000, "lr_schedule": "cosine",
                                       "lr_decay_start": 9000,
                                       "was": {"lr_schedule": "constant",
                                               "lr_decay_start": 3000}})
    (copy / "config.json").write_text(json.dumps(cfg))
    card = finalize.model_card(report, copy)
    assert " (constant) (the final settings; changed on resume at step 3,000" in card
    assert "9,000" not in card and "9000" not in card
    # ... and one recorded without those settings is named as possibly included
    del cfg["lr_schedule_changes"][-1]["was"]
    (copy / "config.json").write_text(json.dumps(cfg))
    card = finalize.model_card(report, copy)
    assert ("a change at step 9,000, after this checkpoint, recorded no earlier settings, "
            "so these may include it") in card
    del report["filter_failures"]  # an older report without it still renders
    assert "share of valid samples" not in finalize.model_card(report, copy)


def test_density_table_shows_consistent_screening_and_old_reports(finalize):
    """Rows with the consistent screen show acceptance and its FCD; rows of a report from
    before it show dashes instead of failing."""
    screen = {"normal": {"valid": 1.0, "unique": 1.0, "FCD/Test": 6.8, "Filters": 0.75},
              "gmm64": {"valid": 1.0, "unique": 0.9998, "FCD/Test": 5.9, "Filters": 0.78,
                        "consistent": {"acceptance": 0.352, "FCD/Test": 1.673,
                                       "Filters": 0.969, "Novelty": 0.953}}}
    rows = finalize._screen_rows(screen).splitlines()
    assert rows[0] == "| normal | 1.0000 | 1.0000 | 6.800 | 0.750 | - | - | - | - |"
    assert rows[1] == ("| gmm64 | 1.0000 | 0.9998 | 5.900 | 0.780 | 0.352 | 1.673 | 0.969 | "
                       "0.953 |")


def test_choose_takes_the_lowest_consistent_fcd_among_novel_enough(finalize):
    def row(fcd, novelty):
        return {"consistent": {"FCD/Test": fcd, "Novelty": novelty}}
    screen = {"gmm64": row(1.6, 0.95), "gmm64, scale 0.8": row(1.3, 0.90),
              "gmm64, scale 0.7": row(1.1, 0.80)}
    assert finalize.choose(screen, 0.85) == "gmm64, scale 0.8"
    assert finalize.choose(screen, 0.0) == "gmm64, scale 0.7"
    assert finalize.choose(screen, 0.99) == "gmm64, scale 0.7"  # none novel enough: all count


def test_lineage_names_the_stage_from_the_recorded_init(finalize):
    by, again = finalize._lineage({"command": "molvae train x --out r"}, 24829)
    assert "scripts/train_default.sh" in by and "until step 24829" in again
    continued = {"init_from": {"path": "/a/b/moses_v1.safetensors", "step": 24829}}
    by, again = finalize._lineage(continued, 6114)
    assert "Continued from a model at training step 24,829 (`moses_v1.safetensors` when" in by
    assert "/a/b" not in by
    assert "train_default_v2.sh" in again and "--max-steps 6114" in again
    by, _ = finalize._lineage({"init_from": {"path": "/a/b/m.safetensors", "step": None}}, 5)
    assert "Continued from `m.safetensors` with" in by


def test_training_scripts_parse_and_stage_two_starts_from_the_kept_v1():
    for name in ("train_default.sh", "train_default_v2.sh", "readme_examples.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)], check=True)
    text = (ROOT / "scripts" / "train_default_v2.sh").read_text()
    init = re.search(r'--init "\$root/([^"]+)"', text).group(1)
    assert (ROOT / init).is_file() and "--free-bits 0.45" in text
    # the anneal the bundled v3 trained with (added there on --resume at step 8,549)
    assert "--lr-schedule cosine" in text and "--lr-decay-start 8549" in text


def test_model_card_reads_the_log_only_up_to_the_checkpoint(finalize, trained_run, tmp_path):
    """A run that trained on after the checkpoint: the card's last validation and minutes are
    those at the checkpoint's step, and a constant KL weight is named as such."""
    run, _ = trained_run
    copy = tmp_path / "run"
    copy.mkdir()
    cfg = json.loads((run / "config.json").read_text())
    cfg["train_config"]["kl_schedule"] = "constant"
    (copy / "config.json").write_text(json.dumps(cfg))
    (copy / "last.safetensors").write_bytes((run / "last.safetensors").read_bytes())
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    last_val = [r for r in rows if r["split"] == "val"][-1]
    step = int(last_val["step"])
    later = {**last_val, "step": str(step + 100), "recon_exact": "0.123",
             "elapsed_s": "99999"}
    with (copy / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([*rows, later])
    report = json.loads((ROOT / "molvae" / "pretrained" / "moses_default.json").read_text())
    report["step"] = step
    card = finalize.model_card(report, copy)
    assert f"exact reconstruction {float(last_val['recon_exact']):.3f}" in card
    assert "exact reconstruction 0.123" not in card and "1667 minutes" not in card
    assert "(constant from the first step)" in card


def test_stage_two_script_resumes_through_stage_one(tmp_path):
    """With a resume.pt in the run folder, train_default_v2.sh continues the run the way
    train_default.sh does (a stand-in `molvae` on PATH prints its arguments)."""
    fake = tmp_path / "bin" / "molvae"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\necho "$@"\n')
    fake.chmod(0o755)
    run = tmp_path / "run"
    run.mkdir()
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    new = subprocess.run(["bash", str(ROOT / "scripts" / "train_default_v2.sh"), str(run), "5m"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert "--init" in new and "--resume" not in new and "--free-bits" in new
    (run / "resume.pt").write_bytes(b"")
    again = subprocess.run(["bash", str(ROOT / "scripts" / "train_default_v2.sh"), str(run),
                            "5h", "--max-steps", "6114"], env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert again[again.index("--out") + 1] == str(run) and "--resume" in again
    assert again[-2:] == ["--max-steps", "6114"] and "--init" not in again


def test_screen_densities_fits_each_mixture_and_shrinks_the_winner(finalize, trained_run,
                                                                   monkeypatch):
    """The candidates are the library's own densities (N(0, I), then prior.fit_points mixtures
    with their fit recorded), and the scales are tried on the best of them only."""
    run, _ = trained_run
    model = molvae.load(run / "last.safetensors")
    z = torch.randn(300, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(finalize, "posterior_samples", lambda m, n, seed: z[:n])
    seen = {}

    def fake_screen(m, n, seed, test):  # gmm4 is the best, its scale 0.8 better still
        name = (m.prior["kind"] + str(m.prior.get("components", "")), m.prior.get("scale", 1))
        seen[name] = m.prior
        fcd = {("normal", 1): 3.0, ("gmm2", 1): 2.0, ("gmm4", 1): 1.5, ("gmm4", 0.8): 1.2}
        return {"consistent": {"FCD/Test": fcd.get(name, 9.0), "Novelty": 0.9}}

    monkeypatch.setattr(finalize, "screen_density", fake_screen)
    args = argparse.Namespace(fit_n=200, seed=0, components=[2, 4], scales=[0.9, 0.8],
                              screen_n=10, min_novelty=0.85)
    chosen, screen, best = finalize.screen_densities(model, args, [])
    assert list(screen) == ["normal", "gmm2", "gmm4", "gmm4, scale 0.9", "gmm4, scale 0.8"]
    assert best == "gmm4, scale 0.8" and chosen.prior["scale"] == 0.8
    assert chosen.prior["components"] == 4 and "nll" in chosen.prior["fit"]
    assert chosen.prior["fitted_on"] == "200 posterior samples of MOSES train molecules"
    assert seen[("normal", 1)] == {"kind": "normal"}
