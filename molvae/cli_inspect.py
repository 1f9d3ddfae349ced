"""CLI subcommands over a file of the user's molecules: encode, reconstruct.

Every input record gives one output row (blank lines included, status ``empty``), with its
line, id and the input's own columns first, then the model's view of the molecule: the
standardized SMILES, whether the model reproduces it, and how usual it is for the model.
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

import numpy as np

from .cli_common import (
    InputRows,
    add_input_args,
    add_model_args,
    add_properties_arg,
    domain_warning,
    load_model,
    output_check,
    property_columns,
    read_input,
    seed_of,
)
from .config import UsageError

log = logging.getLogger("molvae")

CHECK_COLUMNS = ["standardized", "status", "reason", "note", "reconstruction", "exact",
                 "similarity", "neg_elbo_per_token", "elbo_percentile", "in_domain"]


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def _check_rows(args: argparse.Namespace, model: Any, inputs: InputRows,
                seed: int) -> tuple[list[dict[str, str]], Any]:
    """The model's view of every input row (standardization, reproduction, domain), and
    what computing it prepared (:class:`molvae.domain.Details`)."""
    from .domain import assess_details
    found, details = assess_details(model, inputs.texts, reconstruct=not args.no_check,
                                    seed=seed)
    rows = []
    outside = []
    for i, a in enumerate(found):
        status, reason = inputs.problems.get(i, (a.status, a.reason))
        row = {"standardized": a.smiles or "", "status": status, "reason": reason,
               "note": a.note, "reconstruction": a.reconstruction or "",
               "exact": _fmt(a.exact, "") if status == "ok" else "",
               "similarity": _fmt(a.similarity, ".3f"),
               "neg_elbo_per_token": _fmt(a.neg_elbo_per_token, ".4f"),
               "elbo_percentile": _fmt(a.percentile, ".1f"),
               "in_domain": _fmt(a.in_domain, "") if status == "ok" else ""}
        if domain_warning(a) and status == "ok":
            outside.append((inputs.base[i]["line"], inputs.texts[i], domain_warning(a)))
        rows.append(row)
    for line, text, why in outside[:5]:
        log.warning("line %s %s: %s", line, text, why)
    if len(outside) > 5:
        log.warning("%d more inputs are outside the model's domain or not reproduced (see the "
                    "in_domain and exact columns)", len(outside) - 5)
    return rows, details


def _summary(rows: list[dict[str, str]], what: str) -> None:
    from collections import Counter
    counts = Counter(r["status"] for r in rows)
    others = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "ok")
    exact = sum(r["exact"] == "yes" for r in rows)
    log.info("%s %d of %d rows%s; %d reproduced exactly", what, counts["ok"], len(rows),
             f" ({others})" if others else "", exact)


def cmd_encode(args: argparse.Namespace) -> int:
    from .generate import elbo_prepared, encode_prepared
    from .io import TableWriter, write_status_table
    if args.elbo_samples < 1:
        raise UsageError(f"--elbo-samples must be >= 1, got {args.elbo_samples}")
    out_path = args.output
    npy = bool(out_path and out_path.endswith(".npy"))
    if out_path and not npy and not out_path.endswith(".csv"):
        raise UsageError(f"-o {out_path}: encode writes .npy (with a .status.csv beside it) "
                         "or .csv")
    inputs = read_input(args)
    model = load_model(args)
    seed = seed_of(args)
    checks, details = _check_rows(args, model, inputs, seed)
    # the inputs were standardized once, for the checks; the latents and ELBO reuse that
    z = encode_prepared(model, details.prep, sample_posterior=args.sample, seed=seed)
    cols = [*inputs.columns, "input", *CHECK_COLUMNS]
    extra: dict[str, np.ndarray] = {}
    if args.elbo:
        extra = (details.elbo if args.elbo_samples == details.n_samples else
                 elbo_prepared(model, details.prep, n_samples=args.elbo_samples, seed=seed))
        cols += ["neg_elbo", "recon", "kl"]
    pcols, props = property_columns(args, [c["standardized"] or None for c in checks], model,
                                   progress=True)
    cols += pcols
    rows = []
    for i, text in enumerate(inputs.texts):
        row = {**inputs.base[i], "input": text or "", **checks[i], **props[i]}
        for k in ("neg_elbo", "recon", "kl"):
            if k in extra:
                row[k] = _fmt(float(extra[k][i]), ".4f")
        rows.append(row)
    if npy:
        np.save(out_path, z.numpy())
        table = write_status_table(out_path, [{c: r.get(c, "") for c in cols} for r in rows])
        log.info("wrote %s (%d x %d) and its row table %s", out_path, *z.shape, table)
    else:
        cols += [f"z{j}" for j in range(z.shape[1])]
        for i, row in enumerate(rows):
            for j in range(z.shape[1]):
                v = float(z[i, j])
                row[f"z{j}"] = "" if math.isnan(v) else f"{v:.6g}"
        writer = TableWriter(out_path, cols)
        writer.write_rows(rows)
        writer.close()
    _summary(checks, "encoded")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .io import TableWriter
    output_check(args.output)
    args.no_check = False
    inputs = read_input(args)
    model = load_model(args)
    seed = seed_of(args)
    checks, _ = _check_rows(args, model, inputs, seed)
    pcols, props = property_columns(args, [c["reconstruction"] or None for c in checks], model,
                                   progress=True)
    # `smiles` is the reconstruction, so .smi/.sdf outputs hold the decoded molecules
    cols = [*inputs.columns, "input", "smiles", *CHECK_COLUMNS, *pcols]
    writer = TableWriter(args.output, cols)
    writer.write_rows({**inputs.base[i], "input": text or "", **checks[i],
                       "smiles": checks[i]["reconstruction"] or None, **props[i]}
                      for i, text in enumerate(inputs.texts))
    writer.close()
    _summary(checks, "reconstructed")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("encode", help="encode molecules to latent vectors",
                       description="Encode a molecule file to posterior means (or samples). "
                       "One row per input record; each row says whether the model reproduces "
                       "the molecule and how usual it is for the model (in_domain).")
    e.add_argument("input", help=".smi, .csv or .sdf file (optionally .gz)")
    e.add_argument("-o", "--output", default=None,
                   help=".npy (plus FILE.status.csv, row i = record i) or .csv (default: CSV "
                        "on stdout)")
    e.add_argument("--sample", action="store_true", help="posterior samples, not means")
    e.add_argument("--elbo", action="store_true", help="add per-molecule -ELBO columns")
    e.add_argument("--elbo-samples", type=int, default=8,
                   help="posterior samples per -ELBO estimate")
    e.add_argument("--no-check", action="store_true",
                   help="skip the reconstruction check (faster on large files)")
    add_input_args(e)
    add_properties_arg(e)
    add_model_args(e)
    e.set_defaults(func=cmd_encode)

    r = sub.add_parser("reconstruct", help="encode and decode a molecule file",
                       description="Encode every molecule to its posterior mean and decode it "
                       "again (greedy): one row per input record with the reconstruction, "
                       "whether it is exact, its Tanimoto similarity to the input and the "
                       "in-domain score.")
    r.add_argument("input", help=".smi, .csv or .sdf file (optionally .gz)")
    r.add_argument("-o", "--output", default=None,
                   help=".csv, .smi or .sdf (default: CSV on stdout)")
    add_input_args(r)
    add_properties_arg(r)
    add_model_args(r)
    r.set_defaults(func=cmd_reconstruct)
