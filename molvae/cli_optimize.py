"""The `molvae optimize` command: latent-space optimization of one objective."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from .config import UsageError

log = logging.getLogger("molvae")


def _checks(args: argparse.Namespace) -> None:
    if args.budget < 1:
        raise UsageError(f"--budget must be >= 1, got {args.budget}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.min_similarity is not None and not 0.0 <= args.min_similarity <= 1.0:
        raise UsageError(f"--min-similarity must be in [0, 1], got {args.min_similarity}")
    if args.min_similarity and not args.similarity_to:
        raise UsageError("--min-similarity needs --similarity-to SMILES")
    if args.image and Path(args.image).suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--image {args.image}: must end in .png or .svg")
    if args.output and Path(args.output).suffix.lower() not in (".csv", ".smi", ".sdf"):
        raise UsageError(f"-o {args.output}: output must end in .csv, .smi or .sdf")


def cmd_optimize(args: argparse.Namespace) -> int:
    from .cli_generate import _load_model
    from .io import TableWriter
    from .optimize import METHODS, optimize
    from .properties import ObjectiveError, get_objective, score

    _checks(args)
    if args.method not in METHODS:
        raise UsageError(f"--method {args.method!r}: choose from {', '.join(METHODS)}")
    try:
        objective = get_objective(args.objective)
    except ObjectiveError as exc:
        raise UsageError(f"objective: {exc}") from None
    import torch
    torch.set_num_threads(args.threads)  # the command's own process: no library call does this
    model = _load_model(args)
    try:
        result = optimize(model, objective, method=args.method, budget=args.budget,
                          seed=args.seed, start=args.start, similarity_to=args.similarity_to,
                          min_similarity=args.min_similarity,
                          max_heavy_atoms=args.max_heavy_atoms,
                          progress=not args.quiet)
    except ValueError as exc:
        raise UsageError(str(exc).replace("\n", " ")) from None
    top = result.top(args.top)
    extra = ["similarity"] if args.similarity_to else []
    sims = (score([s for s, _ in top], f"similarity:{args.similarity_to}") if extra else [])
    calls = {c.smiles: c.index for c in result.history}
    writer = TableWriter(args.output, ["smiles", "rank", objective.name, *extra, "call"])
    writer.write_rows({"smiles": s, "rank": r, objective.name: f"{v:.6g}", "call": calls[s],
                       **({"similarity": f"{sims[r - 1]:.3f}"} if extra else {})}
                      for r, (s, v) in enumerate(top, 1))
    writer.close()
    if args.history:
        result.write_history(args.history)
    best = f"{top[0][1]:.4g}" if top else "none"
    log.info("%s with %s: %d oracle calls, best %s; %.1f s (%.1f s in the objective)%s",
             objective.name, args.method, result.oracle_calls, best, result.seconds,
             result.objective_seconds,
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
    from .cli_generate import _add_model_args
    from .optimize import DEFAULT_METHOD, METHODS
    o = sub.add_parser(
        "optimize", help="search the latent space for molecules that score high",
        description="Latent-space optimization of an objective (higher is better); every "
                    "score is recomputed by RDKit. OBJECTIVE: a registered name (qed, logp, "
                    "sa, plogp, plogp_norm, mw, tpsa, hbd, hba, rotb, heavy_atoms, rings) or "
                    "similarity:SMILES.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    o.add_argument("objective", help="what to maximise, e.g. qed or similarity:CCO")
    o.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS),
                   help="search method")
    o.add_argument("--budget", type=int, default=1000,
                   help="oracle calls (new valid molecules scored) at most")
    o.add_argument("--start", default=None,
                   help="a SMILES or a molecule file to start from; none: the model's "
                        "sampling density")
    o.add_argument("--similarity-to", default=None, metavar="SMILES",
                   help="constraint: stay similar to this molecule")
    o.add_argument("--min-similarity", type=float, default=None, metavar="D",
                   help="constraint: Tanimoto (Morgan r=2, 2048 bits) to --similarity-to >= D")
    o.add_argument("--max-heavy-atoms", type=int, default=None, metavar="N",
                   help="constraint: at most N heavy atoms")
    o.add_argument("--top", type=int, default=10, help="molecules to write")
    o.add_argument("-o", "--output", default=None,
                   help="the top molecules: .csv, .smi or .sdf (default: CSV on stdout)")
    o.add_argument("--history", default=None, help="also write every oracle call (.csv)")
    o.add_argument("--image", default=None, help="a grid of the top molecules (.png/.svg)")
    o.add_argument("--threads", type=int, default=1,
                   help="torch threads; the search decodes small batches, which one thread "
                        "does fastest, above all on a busy machine")
    _add_model_args(o)
    o.set_defaults(func=cmd_optimize)
