"""What every `molvae` subcommand shares: the parser conventions, model/seed/device flags,
input rows with their IDs and pass-through columns, and property columns.

Conventions (README, "Command line"): every usage error exits 2 with one line; ``-h`` shows
every default; without ``--seed`` a fresh seed is drawn and logged so any run can be repeated.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import UsageError, resolve_device

log = logging.getLogger("molvae")


# --------------------------------------------------------------------------------- parsers
class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) and every default in ``-h``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option whose help does not state its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False
                or default == argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction)
                or not (action.option_strings or action.nargs in ("?", "*"))):
            return text
        return f"{text} (default: %(default)s)"


def seed_type(text: str) -> int:
    """argparse type of ``--seed``: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def add_seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=seed_type, default=None,
                   help="random seed, an integer >= 0 (default: a fresh one, logged)")


def add_model_args(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """``--model``, ``--device`` and (unless the command draws nothing) ``--seed``."""
    p.add_argument("--model", default=None,
                   help="checkpoint or run folder (default: the bundled MOSES model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    if seed:
        add_seed_arg(p)


def seed_of(args: argparse.Namespace) -> int:
    """The run's seed: ``--seed``, or a fresh one that :func:`announce_seed` logs when the
    command is done (or interrupted), so the run can be repeated."""
    if getattr(args, "seed", None) is None:
        from .generate import fresh_seed
        args.seed = fresh_seed()
        args.fresh_seed = True
    return args.seed


def announce_seed(args: argparse.Namespace) -> None:
    if getattr(args, "fresh_seed", False):
        log.info("seed %d (give --seed %d to repeat this run)", args.seed, args.seed)


def load_model(args: argparse.Namespace):
    from . import load
    return load(args.model, device=str(resolve_device(args.device)))


def image_check(path: str | None) -> None:
    if path and Path(path).suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--image {path}: must end in .png or .svg")


def output_check(path: str | None, suffixes: tuple[str, ...] = (".csv", ".smi", ".sdf")) -> None:
    if path and Path(path).suffix.lower() not in suffixes:
        raise UsageError(f"-o {path}: output must end in {', '.join(suffixes[:-1])} or "
                         f"{suffixes[-1]}")


# ------------------------------------------------------------------------------ input rows
@dataclass
class InputRows:
    """A molecule file's records: texts for the chemistry (None where a row failed before
    it), and per row the leading output columns (line, id, pass-through input columns)."""

    texts: list[str | None]
    base: list[dict[str, Any]]
    columns: list[str]  # the keys of every base row, in order
    problems: dict[int, tuple[str, str]]  # row -> (status, reason) before any chemistry

    def __len__(self) -> int:
        return len(self.texts)


RESULT_NAMES = {"smiles", "status", "reason", "note", "line", "id", "input"}


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smiles-column", default=None,
                   help="CSV column holding SMILES (default: smiles/SMILES/... detected)")
    p.add_argument("--id-column", default=None,
                   help="column (CSV) or SD property (SDF) naming each molecule (default: "
                        "an id/name/title column if there is one; .smi: the name field; "
                        "SDF: the record title)")


def read_input(args: argparse.Namespace, path: str | None = None) -> InputRows:
    """Every record of the input file, with its line, id and pass-through columns.

    Pass-through columns whose names clash with result columns are prefixed ``input_``.
    """
    from .readers import read_molecules
    raw = read_molecules(path or args.input, args.smiles_column, args.id_column)
    # the column the ids come from is the `id` column; the others pass through as they are
    extra_cols = [c for c in raw.columns if c != "id" and not all(
        e.get(c, "") == ident for e, ident in zip(raw.extra, raw.ids))]
    shown = [f"input_{c}" if c in RESULT_NAMES else c for c in extra_cols]
    columns = ["line", "id", *shown]
    base, texts, problems = [], [], {}
    for i, text in enumerate(raw.texts):
        problem = raw.problem(i)
        if problem is not None:
            problems[i] = problem
        texts.append(None if problem is not None else text)
        row = {"line": raw.lines[i], "id": raw.ids[i]}
        extra = raw.extra[i]
        for c, name in zip(extra_cols, shown):
            row[name] = extra.get(c, "")
        base.append(row)
    return InputRows(texts, base, columns, problems)


# ------------------------------------------------------------------------- property columns
def add_properties_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--properties", default=None, metavar="LIST",
                   help="add RDKit columns, comma-separated: qed, sa, logp, mw, tpsa, hbd, "
                        "hba, rotb, heavy_atoms, rings, plogp, filters (MOSES filter verdict "
                        "and reason), novel (not in the model's training set) (default: none)")
    p.add_argument("--train", default=None, metavar="FILE",
                   help="the training molecules `novel` compares against (default: MOSES "
                        "train for the bundled model)")


def property_columns(args: argparse.Namespace, smiles: list[str | None], model: Any = None,
                     progress: bool = False) -> tuple[list[str], list[dict[str, str]]]:
    """The ``--properties`` columns of each molecule: (column names, one dict per molecule)."""
    if not getattr(args, "properties", None):
        return [], [{} for _ in smiles]
    from .columns import ColumnError, parse_properties, property_table
    try:
        names = parse_properties(args.properties)
        return property_table(smiles, names, model=model, train=args.train,
                              progress=progress and not args.quiet and len(smiles) > 1000)
    except ColumnError as exc:
        raise UsageError(f"--properties: {exc}") from None


def domain_warning(a: Any) -> str:
    """What to tell the user about one :func:`molvae.domain.assess` result ("" if nothing):
    outside the model's domain, and/or not reproduced by it."""
    parts = [a.warning] if a.warning else []
    if a.exact is False and a.reconstruction:
        parts.append(f"the model does not reproduce it (decodes to {a.reconstruction}, "
                     f"Tanimoto {a.similarity:.2f})")
    return "; ".join(parts)
