"""The `molvae optimize` command: latent-space optimization of one objective."""

from __future__ import annotations

import argparse
import json
import logging
import math

from .cli_common import add_model_args, image_check, load_model, output_check, seed_of
from .config import UsageError

log = logging.getLogger("molvae")


def _checks(args: argparse.Namespace) -> None:
    if args.budget < 1:
        raise UsageError(f"--budget must be >= 1, got {args.budget}")
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.min_similarity is not None and not 0.0 <= args.min_similarity <= 1.0:
        raise UsageError(f"--min-similarity must be in [0, 1], got {args.min_similarity}")
    if args.min_similarity and not args.similarity_to:
        raise UsageError("--min-similarity needs --similarity-to SMILES")
    image_check(args.image)
    output_check(args.output)


def _options(items: list[str] | None) -> dict[str, object]:
    """--option KEY=VALUE pairs: the value read as JSON (1.0, 20, true, "text") where it parses,
    else as text."""
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option {item!r}: write KEY=VALUE, e.g. --option sigma0=1.0")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def cmd_optimize(args: argparse.Namespace) -> int:
    from .io import TableWriter, flag_text
    from .optimize import METHODS, check_options, optimize
    from .properties import ObjectiveError, get_objective, score

    _checks(args)
    if args.method not in METHODS:
        raise UsageError(f"--method {args.method!r}: choose from {', '.join(METHODS)}")
    options = _options(args.option)
    try:
        check_options(args.method, options)
    except ValueError as exc:
        raise UsageError(f"--option: {exc}") from None
    try:
        objective = get_objective(args.objective)
    except ObjectiveError as exc:
        raise UsageError(f"objective: {exc}") from None
    model = load_model(args)
    try:
        result = optimize(model, objective, method=args.method, budget=args.budget,
                          seed=seed_of(args), start=args.start, similarity_to=args.similarity_to,
                          min_similarity=args.min_similarity,
                          max_heavy_atoms=args.max_heavy_atoms,
                          progress=not args.quiet, inconsistent=args.inconsistent, **options)
    except ValueError as exc:
        raise UsageError(str(exc).replace("\n", " ")) from None
    top = result.top(args.top)
    extra = ["similarity"] if args.similarity_to else []
    sims = (score([s for s, _ in top], f"similarity:{args.similarity_to}") if extra else [])
    calls = {c.smiles: c for c in result.history}
    writer = TableWriter(args.output, ["smiles", "rank", objective.name, *extra, "call",
                                       "consistent"])
    writer.write_rows({"smiles": s, "rank": r, objective.name: f"{v:.6g}",
                       "call": calls[s].index, "consistent": flag_text(calls[s].consistent),
                       **({"similarity": f"{sims[r - 1]:.3f}"} if extra else {})}
                      for r, (s, v) in enumerate(top, 1))
    writer.close()
    if args.history:
        result.write_history(args.history)
    best = f"{top[0][1]:.4g}" if top else "none"
    decoded = [c.consistent for c in result.history if c.consistent is not None]
    share = (f"; {sum(decoded) / len(decoded):.0%} of the decoded ones grammar-consistent"
             if decoded else "")
    log.info("%s with %s: %d oracle calls, best %s; %.1f s (%.1f s in the objective)%s%s",
             objective.name, args.method, result.oracle_calls, best, result.seconds,
             result.objective_seconds, share,
             f"; {result.infeasible} molecules broke the constraints" if result.infeasible
             else "")
    if not top:
        log.warning("no molecule scored a finite value")
    if args.image and top:
        from .draw import molecule_grid
        molecule_grid([s for s, _ in top], args.image,
                      legends=[f"#{r} {v:.3g}" if math.isfinite(v) else f"#{r}"
                               for r, (_, v) in enumerate(top, 1)])
        log.info("drew the top %d molecules to %s", len(top), args.image)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from .optimize import DEFAULT_METHOD, METHODS
    o = sub.add_parser(
        "optimize", help="search the latent space for molecules that score high",
        description="Latent-space optimization of an objective (higher is better); every "
                    "score is recomputed by RDKit. OBJECTIVE: a registered name (qed, logp, "
                    "sa, plogp, plogp_norm, mw, tpsa, hbd, hba, rotb, heavy_atoms, rings) or "
                    "similarity:SMILES. --threads auto means one thread here: the search "
                    "decodes small batches, which one thread does fastest.")
    o.add_argument("objective", help="what to maximise, e.g. qed or similarity:CCO")
    o.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS),
                   help="search method")
    o.add_argument("--budget", type=int, default=1000,
                   help="oracle calls (new valid molecules scored) at most")
    o.add_argument("--start", default=None,
                   help="a SMILES or a molecule file to start from (default: the model's "
                        "sampling density)")
    o.add_argument("--similarity-to", default=None, metavar="SMILES",
                   help="constraint: stay similar to this molecule (default: none)")
    o.add_argument("--min-similarity", type=float, default=None, metavar="D",
                   help="constraint: Tanimoto (Morgan r=2, 2048 bits) to --similarity-to >= D "
                        "(default: none)")
    o.add_argument("--max-heavy-atoms", type=int, default=None, metavar="N",
                   help="constraint: at most N heavy atoms (default: no cap)")
    o.add_argument("--inconsistent", default="keep", choices=["keep", "invalid", "redecode"],
                   help="a decode whose SELFIES string is not grammar-consistent: score it, "
                        "treat it as invalid (no oracle call), or sample the point again for a "
                        "consistent one (the README measures the three)")
    o.add_argument("--option", action="append", default=None, metavar="KEY=VALUE",
                   help="a setting of the method, repeatable (e.g. --option sigma0=1.0 for "
                        "cmaes; the README lists them) (default: the method's defaults)")
    o.add_argument("--top", type=int, default=10, help="molecules to write")
    o.add_argument("-o", "--output", default=None,
                   help="the top molecules: .csv, .smi or .sdf (default: CSV on stdout)")
    o.add_argument("--history", default=None,
                   help="also write every oracle call (.csv) (default: no)")
    o.add_argument("--image", default=None,
                   help="a grid of the top molecules (.png/.svg) (default: none)")
    add_model_args(o)
    o.set_defaults(func=cmd_optimize)
