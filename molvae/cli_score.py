"""The `molvae score` command: objectives of every molecule in a file, one row per input row."""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter

from .cli_common import add_input_args, read_input
from .config import UsageError

log = logging.getLogger("molvae")


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def cmd_score(args: argparse.Namespace) -> int:
    from .io import TableWriter
    from .properties import ObjectiveError, get_objective, score_all

    specs = [s.strip() for s in args.objective.split(",") if s.strip()]
    if not specs:
        raise UsageError("--objective: give at least one objective, e.g. qed,sa,plogp")
    if args.jobs is not None and args.jobs < 0:
        raise UsageError(f"--jobs must be >= 0 (0 = every core), got {args.jobs}")
    try:
        objectives = [get_objective(s) for s in specs]
    except ObjectiveError as exc:
        raise UsageError(f"--objective: {exc}") from None
    names = [o.name for o in objectives]
    if len(set(names)) < len(names):
        raise UsageError(f"--objective: an objective is named twice ({args.objective})")

    inputs = read_input(args)
    # a bar only when the table goes to a file, as `molvae sample` does
    res = score_all(inputs.texts, objectives, jobs=args.jobs,
                    progress=not getattr(args, "quiet", False) and args.output is not None)

    writer = TableWriter(args.output, [*inputs.columns, "smiles", *names, "status", "reason"])
    counts: Counter[str] = Counter()
    rows = []
    for i, text in enumerate(inputs.texts):
        row = {**inputs.base[i], "smiles": text}
        bad = []
        for name in names:
            row[name] = _cell(float(res.values[name][i]))
            if res.kinds[name][i] != "ok":
                bad.append((name, res.kinds[name][i], res.reasons[name][i]))
        if i in inputs.problems:
            status, reason = inputs.problems[i]
        elif not bad:
            status, reason = "ok", ""
        elif bad[0][1] in ("invalid", "unsupported"):  # the same for every objective
            status, reason = bad[0][1], bad[0][2]
        else:
            status = bad[0][1]
            reason = "; ".join(f"{name}: {why}" for name, _, why in bad)
        row["status"], row["reason"] = status, reason
        counts[status] += 1
        rows.append(row)
    try:
        writer.write_rows(rows)
    finally:
        writer.close()
    others = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "ok")
    log.info("scored %d of %d molecules%s", counts["ok"], len(rows),
             f"; {others}" if others else "")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from .properties import OBJECTIVES
    s = sub.add_parser("score", help="score the molecules of a file",
                       description="Score every molecule of a .smi/.csv/.sdf file (optionally "
                       ".gz) with RDKit objectives; every input row is kept, with a status.")
    s.add_argument("input", help=".smi, .csv or .sdf file (optionally .gz)")
    s.add_argument("--objective", default="qed,logp,sa",
                   help=f"comma-separated: {', '.join(OBJECTIVES)}, similarity:SMILES "
                   "(default: qed,logp,sa)")
    s.add_argument("-o", "--output", default=None, help=".csv, .smi or .sdf (default: stdout)")
    add_input_args(s)
    s.add_argument("--jobs", type=int, default=None,
                   help="worker processes for large files (default: every core)")
    s.set_defaults(func=cmd_score)
