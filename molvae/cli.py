"""The `molvae` command line: argparse subcommands over the public API.

Exit codes: 0 ok, 2 bad usage or bad input (file, column, config, checkpoint), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import traceback
import warnings
from dataclasses import fields
from typing import Any

from .checkpoint import CheckpointError
from .cli_common import Parser, add_seed_arg, announce_seed, seed_of
from .config import (  # UsageError: re-exported, it used to live here
    ConfigError,
    ModelConfig,
    TrainConfig,
    UsageError,
    default_num_threads,
    from_dict,
    load_config_file,
)

__all__ = ["main", "UsageError"]

log = logging.getLogger("molvae")

# flags whose meaning is clearer under another name than the config field
_FLAG_HELP = {
    "beta": "final KL weight (per-molecule nats)",
    "free_bits": "free bits per latent dimension (nats)",
    "max_time": "stop after this much training time: seconds or e.g. 90m, 2h",
    "max_len": "longest molecule in SELFIES symbols; longer ones are rejected",
    "keep_stereo": "keep stereochemistry (true/false)",
    "largest_fragment": "keep the largest fragment of multi-fragment inputs (true/false)",
    "kl_schedule": "linear | cyclical | constant",
    "lr_schedule": "constant | cosine (from --lr at --lr-decay-start to --lr-final)",
    "num_workers": "tokenizer processes (0 = all cores)",
}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(text))
    if not m:
        raise UsageError(f"bad duration {text!r}; use seconds or e.g. 45m, 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _add_config_flags(p: argparse.ArgumentParser, cls: type, title: str) -> None:
    group = p.add_argument_group(title)
    for f in fields(cls):
        if f.name == "vocab_size":
            continue
        flag = "--" + f.name.replace("_", "-")
        text = _FLAG_HELP.get(f.name, f.name.replace("_", " "))
        group.add_argument(flag, dest=f"{cls.__name__}.{f.name}", default=None, metavar="X",
                           help=f"{text} (default: {f.default})")


def _collect(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    out = {}
    for f in fields(cls):
        v = getattr(args, f"{cls.__name__}.{f.name}", None)
        if v is not None:
            out[f.name] = parse_duration(v) if f.name == "max_time" else v
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train
    if args.init and args.resume:
        raise UsageError("--init starts a new run from a checkpoint's weights; --resume "
                         "continues a run: give one of them")
    model_d: dict[str, Any] = {}
    train_d: dict[str, Any] = {}
    if args.config:
        model_d, train_d = load_config_file(args.config)
    model_d.update(_collect(args, ModelConfig))
    given = _collect(args, TrainConfig)
    if args.resume:
        # start from the run's own settings so that e.g. its --max-steps survives --epochs N
        import json
        from pathlib import Path
        run_cfg = Path(args.out) / "config.json"
        if not run_cfg.exists():
            raise ConfigError(f"{args.out}: no config.json, so there is no run to resume")
        train_d = dict(json.loads(run_cfg.read_text())["train_config"])
    train_d.update(given)
    mc = from_dict(ModelConfig, model_d, where="model config: ")
    tc = from_dict(TrainConfig, train_d, where="train config: ")
    if args.resume and model_d:
        log.warning("--resume keeps the run's model settings; model flags are ignored")
    if args.resume:
        from .train_setup import RESUMABLE_SETTINGS
        fixed = sorted(k for k in given if k not in RESUMABLE_SETTINGS)
        if fixed:
            log.warning("--resume keeps the run's %s; only %s may change", ", ".join(fixed),
                        ", ".join(RESUMABLE_SETTINGS))
    res = train(args.data, args.out, val_path=args.val,
                model_config=(mc if model_d else None) if args.init else mc, train_config=tc,
                seed=(args.seed or 0) if args.resume else seed_of(args), device=args.device,
                resume=args.resume,
                smiles_column=args.smiles_column, progress=not args.quiet,
                command=shlex.join(["molvae", *args.argv]), init_from=args.init)
    m = res.last_metrics
    log.info("stopped (%s) at step %d; best val loss %.4f; exact reconstruction %.3f; "
             "checkpoints in %s", res.stopped_by, res.step, res.best_val_loss,
             m.get("recon_exact", float("nan")), res.out_dir)
    return 130 if res.stopped_by == "interrupt" else 0


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    p = Parser(prog="molvae", description="Molecular generation with a SELFIES GRU "
               "variational autoencoder.")
    p.add_argument("--version", action="version", version=f"molvae {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # -v/-q also after the subcommand; SUPPRESS keeps a top-level flag from being reset
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging, tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars, warnings only")
    common.add_argument("--threads", default="auto", metavar="N",
                        help="torch threads: a number, or auto (most commands: the cores idle "
                             "now; sample: every core; optimize: one; OMP_NUM_THREADS wins; "
                             "see the README, Threads)")
    _orig_add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return _orig_add(name, parents=[common, *kw.pop("parents", [])], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    t = sub.add_parser("train", help="train a VAE on a molecule file",
                       description="Train a VAE on .smi/.csv/.sdf (optionally .gz) molecules.")
    t.add_argument("data", help="training molecules (.smi, .csv, .tsv, .sdf; .gz ok)")
    t.add_argument("--out", required=True,
                   help="run folder for config, metrics, checkpoints (required, no default)")
    t.add_argument("--val", default=None, help="validation file (default: a seeded split)")
    t.add_argument("--config", default=None,
                   help="a preset name (moses: the bundled model's first-stage recipe, which the "
                        "defaults below already are; moses_gpu: the same with a two-layer "
                        "decoder) or a TOML file with [model] and [train] tables (default: "
                        "the moses recipe)")
    add_seed_arg(t)
    t.add_argument("--device", default="auto", help="auto | cpu | cuda")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this model's weights, architecture and vocabulary (a "
                        "fresh optimizer): fine-tune it on DATA (default: random weights)")
    t.add_argument("--smiles-column", default=None,
                   help="CSV column holding SMILES (default: detected)")
    _add_config_flags(t, ModelConfig, "model")
    _add_config_flags(t, TrainConfig, "training")
    t.set_defaults(func=cmd_train)

    from . import cli_eval, cli_generate, cli_inspect, cli_optimize, cli_prior, cli_score
    cli_generate.add_commands(sub)
    cli_inspect.add_commands(sub)
    cli_prior.add_commands(sub)
    cli_eval.add_commands(sub)
    cli_score.add_commands(sub)
    cli_optimize.add_commands(sub)
    return p


def _training_errors() -> tuple[type[Exception], ...]:
    """TrainingError when the training module is loaded, else nothing to catch: only `molvae
    train` raises it, and importing molvae.train for the other commands would cost them the
    training code."""
    training = sys.modules.get(f"{__package__}.train")
    return (training.TrainingError,) if training is not None else ()


# --threads auto, per command, as scripts/benchmark_threads.py measured (README "Threads"):
# training's intra-op threads wait for each other at every step, so a thread on a busy core
# stalls them all (auto: the idle cores); sampling runs independent single-threaded decoders
# that every core speeds up even on a busy machine; the optimizer's small decoder calls are
# fastest on one thread.
_AUTO_THREADS = {"sample": "cores", "evaluate": "cores", "optimize": 1}


def _threads(args: argparse.Namespace) -> str | int | None:
    """What to pass to default_num_threads: the user's --threads, or the command's auto."""
    if args.threads != "auto":
        return args.threads
    if "OMP_NUM_THREADS" in os.environ:
        return None
    auto = _AUTO_THREADS.get(args.command)
    if auto == "cores":
        from .config import usable_cores
        return usable_cores()
    return auto


class _Format(logging.Formatter):
    """``molvae: message``, and ``molvae: warning: message`` from warnings up."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage().replace("\n", " ")
        if record.levelno >= logging.WARNING:
            return f"molvae: {record.levelname.lower()}: {text}"
        return f"molvae: {text}"


def _setup_logging(verbose: bool, quiet: bool) -> None:
    """The command's log lines on stderr; Python warnings (e.g. from torch or RDKit wrappers)
    become one ``molvae: warning:`` line each instead of a source line. Process-wide: the
    command owns its process."""
    log.setLevel(logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO))
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, "_molvae", False):
            log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    handler._molvae = True  # type: ignore[attr-defined]
    log.addHandler(handler)

    def show(message: Any, category: type, *_: Any, **__: Any) -> None:
        log.warning("%s", message)

    warnings.showwarning = show  # type: ignore[assignment]


def _subparser(parser: argparse.ArgumentParser, command: str | None
               ) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported by the subcommand, as `molvae sample: error: ...`
            _subparser(parser, getattr(args, "command", None)).error(
                f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    args.argv = argv
    _setup_logging(args.verbose, args.quiet)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    from .draw import PictureError
    from .io import OutputError
    from .readers import DataFileError
    try:
        default_num_threads(_threads(args))
        code = int(args.func(args) or 0)
        announce_seed(args)
        return code
    except (DataFileError, ConfigError, CheckpointError, UsageError, FileNotFoundError,
            OutputError, PictureError) as exc:
        print(f"molvae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except _training_errors() as exc:
        print(f"molvae {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        announce_seed(args)
        print(f"molvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an internal error: one line, the traceback only with -v
        if args.verbose:
            traceback.print_exc()
        print(f"molvae {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(run with -v for the traceback)", file=sys.stderr)
        return 1
