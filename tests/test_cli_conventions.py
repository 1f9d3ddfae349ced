"""CLI conventions every subcommand follows: defaults in -h, one-line usage errors with exit
2, fresh seeds that are logged, warnings as one line, --threads everywhere."""

from __future__ import annotations

import argparse
import warnings

import pytest

from molvae.cli import build_parser, main


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, cap.err


MODEL_COMMANDS = ["sample", "interpolate", "neighbours", "encode", "reconstruct", "evaluate",
                  "latent-map", "optimize", "train"]


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_help_shows_every_default(name):
    parser = _subparsers()[name]
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)):
            continue
        if not action.option_strings:
            continue  # positionals
        shown = parser._get_formatter()._get_help_string(action) or ""
        assert "default" in shown, f"{name} {action.option_strings}: {shown!r}"
    assert "--threads" in text


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_model_commands_take_model_seed_device(name):
    opts = {o for a in _subparsers()[name]._actions for o in a.option_strings}
    needed = {"--seed", "--device"} | ({"--model"} if name != "train" else set())
    assert needed <= opts, name


@pytest.mark.parametrize("argv, word", [
    (["sample", "--seed", "-1"], "--seed"),
    (["sample", "--seed", "x"], "--seed"),
    (["sample", "-n", "0"], "-n"),
    (["sample", "--threads", "0"], "--threads"),
    (["sample", "--bogus"], "unrecognized"),
    (["sample", "--properties", "qedd"], "did you mean 'qed'"),
    (["sample", "-o", "out.txt"], "-o out.txt"),
    (["encode", "no_such_file.smi"], "file not found"),
    (["train", "x.smi", "--out", "run", "--config", "mosse"], "did you mean 'moses'"),
    (["optimize", "qedd"], "did you mean"),
    (["interpolate", "CCO"], "required"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, word):
    code, _, err = _run(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"molvae {argv[0]}: error: "), lines[0]
    assert word in lines[0], lines[0]


def test_fresh_seed_is_logged_and_repeats(capsys, trained_run):
    run = str(trained_run[0])
    code, out1, err = _run(capsys, "sample", "--model", run, "-n", 4)
    assert code == 0, err
    line = next(ln for ln in err.splitlines() if "--seed" in ln)
    seed = int(line.split("--seed")[1].split()[0].strip(")"))
    code, out2, _ = _run(capsys, "-q", "sample", "--model", run, "-n", 4, "--seed", seed)
    assert out2 == out1


def test_warnings_print_as_one_line(capsys):
    from molvae.cli import _setup_logging
    _setup_logging(False, False)
    warnings.warn("something odd\nacross lines", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "molvae: warning: something odd across lines\n"


def test_auto_threads_per_command(monkeypatch):
    from molvae.cli import _threads
    from molvae.config import usable_cores
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    ns = argparse.Namespace
    assert _threads(ns(threads="3", command="sample")) == "3"
    assert _threads(ns(threads="auto", command="sample")) == usable_cores()
    assert _threads(ns(threads="auto", command="optimize")) == 1
    assert _threads(ns(threads="auto", command="train")) is None  # idle cores, auto_threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _threads(ns(threads="auto", command="sample")) is None


def test_cli_sample_is_prefix_stable(capsys, trained_run):
    run = str(trained_run[0])
    _, five, _ = _run(capsys, "-q", "sample", "--model", run, "-n", 5, "--seed", 7)
    _, twenty, _ = _run(capsys, "-q", "sample", "--model", run, "-n", 20, "--seed", 7,
                        "--batch-size", 3)
    assert twenty.splitlines()[:6] == five.splitlines()


def test_versions_come_from_package_metadata():
    from importlib import metadata

    from molvae.checkpoint import versions
    v = versions()
    assert v["selfies"] == metadata.version("selfies")
    assert v["rdkit"] == metadata.version("rdkit")
