"""The `molvae` command line, run in-process through molvae.cli.main (one subprocess check)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from molvae import checkpoint as ckpt
from molvae.cli import main, parse_duration

TINY_FLAGS = ["--embed-dim", "8", "--enc-hidden", "16", "--dec-hidden", "16",
              "--latent-dim", "4", "--batch-size", "16", "--max-steps", "4", "--val-every", "2",
              "--checkpoint-every", "2", "--log-every", "1", "--val-recon-size", "5",
              "--num-workers", "1", "--device", "cpu"]


def _train(*args: str, quiet: bool = False) -> int:
    return main([*(["-q"] if quiet else []), "train", *map(str, args)])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("molvae train: error: "), lines[0]
    return lines[0]


def test_train_happy_path(tmp_path, small_csv, capsys):
    out = tmp_path / "run"
    code = _train(small_csv, "--out", out, "--seed", "3", *TINY_FLAGS, quiet=True)
    assert code == 0, capsys.readouterr().err
    for name in ("config.json", "metrics.csv", "rejects.csv", "best.safetensors",
                 "last.safetensors", "resume.pt"):
        assert (out / name).exists(), name
    run = json.loads((out / "config.json").read_text())
    assert run["seed"] == 3
    assert run["model_config"]["latent_dim"] == 4
    assert run["train_config"]["max_steps"] == 4
    assert run["train_config"]["batch_size"] == 16
    assert run["device"] == "cpu"
    model = ckpt.load(out)
    assert model.config.latent_dim == 4 and model.meta["seed"] == 3
    assert "Traceback" not in capsys.readouterr().err


def test_train_records_its_command(tmp_path, small_csv):
    """config.json's command is the command that ran, also when main() gets argv directly."""
    out = tmp_path / "run"
    assert _train(small_csv, "--out", out, *TINY_FLAGS, quiet=True) == 0
    command = json.loads((out / "config.json").read_text())["command"]
    words = shlex.split(command)
    assert words[0] == "molvae" and "train" in words
    assert str(out) in words and str(small_csv) in words
    assert words[words.index("--max-steps") + 1] == "4"


def test_train_then_resume(tmp_path, small_csv):
    out = tmp_path / "run"
    assert _train(small_csv, "--out", out, *TINY_FLAGS, quiet=True) == 0
    assert _train(small_csv, "--out", out, "--resume", "--max-steps", "6", quiet=True) == 0
    assert ckpt.load(out / "last.safetensors").meta["step"] == 6


def test_resume_with_one_stopping_flag_keeps_the_others(tmp_path, small_csv):
    """`--resume --epochs 1` changes the epoch limit only; the run's --max-steps 4 stays."""
    out = tmp_path / "run"
    assert _train(small_csv, "--out", out, *TINY_FLAGS, quiet=True) == 0
    assert _train(small_csv, "--out", out, "--resume", "--epochs", "1", quiet=True) == 0
    assert ckpt.load(out / "last.safetensors").meta["step"] == 4


def test_resume_with_lr_anneal_and_a_fixed_setting(tmp_path, small_csv, caplog):
    """Schedule flags apply on --resume; a setting that cannot change is named in a warning."""
    out = tmp_path / "run"
    assert _train(small_csv, "--out", out, *TINY_FLAGS, quiet=True) == 0
    with caplog.at_level("WARNING", logger="molvae"):
        assert _train(small_csv, "--out", out, "--resume", "--max-steps", "6", "--beta", "0.5",
                      "--lr", "5e-4", "--lr-schedule", "cosine", "--lr-decay-start", "4",
                      quiet=True) == 0
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "keeps the run's beta;" in warning and "lr_schedule" in warning
    tc = json.loads((out / "config.json").read_text())["train_config"]
    assert tc["lr_schedule"] == "cosine" and tc["lr_decay_start"] == 4 and tc["lr"] == 5e-4
    assert tc["beta"] != 0.5


def test_train_with_config_file(tmp_path, small_csv):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[model]\nlatent_dim = 3\nembed_dim = 8\nenc_hidden = 8\ndec_hidden = 8\n"
                   "[train]\nmax_steps = 2\nbatch_size = 16\nval_every = 2\nval_recon_size = 4\n"
                   "num_workers = 1\n")
    out = tmp_path / "run"
    # a flag overrides the file
    assert _train(small_csv, "--out", out, "--config", cfg, "--latent-dim", "5",
                  "--device", "cpu", quiet=True) == 0
    run = json.loads((out / "config.json").read_text())
    assert run["model_config"]["latent_dim"] == 5
    assert run["model_config"]["embed_dim"] == 8
    assert run["train_config"]["max_steps"] == 2


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "no_such_file.smi"
    code = _train(missing, "--out", tmp_path / "run", *TINY_FLAGS)
    assert code == 2
    line = _one_error_line(capsys)
    assert str(missing) in line and "not found" in line


def test_unknown_file_type(tmp_path, capsys):
    p = tmp_path / "mols.xlsx"
    p.write_text("CCO\n")
    assert _train(p, "--out", tmp_path / "run", *TINY_FLAGS) == 2
    assert "unknown file type" in _one_error_line(capsys)


def test_bad_column(tmp_path, small_csv, capsys):
    code = _train(small_csv, "--out", tmp_path / "run", "--smiles-column", "structure",
                  *TINY_FLAGS)
    assert code == 2
    line = _one_error_line(capsys)
    assert "'structure'" in line and "smiles" in line and str(small_csv) in line


def test_no_smiles_column(tmp_path, capsys):
    p = tmp_path / "mols.csv"
    p.write_text("id,structure\n1,CCO\n")
    assert _train(p, "--out", tmp_path / "run", *TINY_FLAGS) == 2
    assert "--smiles-column" in _one_error_line(capsys)


def test_bad_config_key(tmp_path, small_csv, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[train]\nbath_size = 64\n")
    code = _train(small_csv, "--out", tmp_path / "run", "--config", cfg)
    assert code == 2
    line = _one_error_line(capsys)
    assert "did you mean 'batch_size'" in line
    assert str(cfg) in line and "bath_size" in line


@pytest.mark.parametrize(
    ("text", "words"),
    [("[trian]\nlr = 0.1\n", ["trian"]),
     ("[train\nlr = 0.1\n", ["not valid TOML"]),
     ("[model]\nlatent_dim = 'big'\n", ["latent_dim", "big"]),
     ("[model]\nlatent_dmi = 4\n", ["did you mean 'latent_dim'"])],
)
def test_bad_config_file(tmp_path, small_csv, capsys, text, words):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(text)
    assert _train(small_csv, "--out", tmp_path / "run", "--config", cfg) == 2
    line = _one_error_line(capsys)
    for w in words:
        assert w in line


def test_missing_config_file(tmp_path, small_csv, capsys):
    assert _train(small_csv, "--out", tmp_path / "run", "--config", tmp_path / "x.toml") == 2
    assert "config file not found" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--lr", "abc"), ("--batch-size", "1.5"), ("--batch-size", "0"),
     ("--kl-schedule", "cosine"), ("--keep-stereo", "maybe"), ("--max-time", "soon"),
     ("--tau-end", "0")],
)
def test_bad_flag_value(tmp_path, small_csv, capsys, flag, value):
    code = _train(small_csv, "--out", tmp_path / "run", flag, value)
    assert code == 2
    line = _one_error_line(capsys)
    assert value in line or flag.lstrip("-").replace("-", "_") in line
    assert not (tmp_path / "run" / "config.json").exists()


def test_bad_device(tmp_path, small_csv, capsys):
    assert _train(small_csv, "--out", tmp_path / "run", "--device", "tpu") == 2
    assert "--device" in _one_error_line(capsys)


def test_resume_without_run(tmp_path, small_csv, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert _train(small_csv, "--out", folder, "--resume") == 2
    line = _one_error_line(capsys)
    assert str(folder) in line and "resume" in line


def test_existing_run_without_resume(tmp_path, small_csv, trained_run, capsys):
    out, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    assert _train(small_csv, "--out", copy, *TINY_FLAGS) == 2
    line = _one_error_line(capsys)
    assert "--resume" in line and str(copy) in line
    after = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    assert after == before


def test_usage_errors_exit_2(capsys):
    assert main(["train"]) == 2  # missing data and --out
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "see molvae train -h" in err, err
    assert main(["train", "x.smi", "--out", "y", "--no-such-flag"]) == 2
    assert "--no-such-flag" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["frobnicate"]) == 2


def test_version_and_help_exit_0(capsys):
    assert main(["--version"]) == 0
    assert "molvae" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--smiles-column" in out and "--resume" in out and "--latent-dim" in out


def test_python_m_molvae_help():
    res = subprocess.run([sys.executable, "-m", "molvae", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr
    assert "usage: molvae" in res.stdout and "train" in res.stdout
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("45m", 2700.0), ("2h", 7200.0),
                                               ("1.5d", 129600.0), ("30s", 30.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
