"""`molvae fit-prior`: fit the density a model samples z from, and save the model with it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .cli_common import add_input_args, add_model_args, load_model, read_input, seed_of
from .config import UsageError

log = logging.getLogger("molvae")


def cmd_fit_prior(args: argparse.Namespace) -> int:
    from . import checkpoint, density, prior
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise UsageError(f"-o {out}: the model is saved as a .safetensors checkpoint")
    if args.model and out.resolve() == Path(args.model).resolve():
        raise UsageError(f"-o {out}: would overwrite the input checkpoint; choose a new file")
    if out.exists() and not args.force:
        raise UsageError(f"-o {out}: exists (give --force to replace it)")
    model = load_model(args)
    rows = read_input(args)
    smiles = [t for t in rows.texts if t]
    if len(smiles) < 2:
        raise UsageError(f"{args.input}: {len(smiles)} molecules; fitting a density needs "
                         "at least 2 (thousands for a useful one)")
    try:  # before the fit: the density's own check says what a scale must be
        density.check_scale({"scale": args.scale})
    except ValueError as exc:
        raise UsageError(f"--scale: {exc}") from None
    seed = seed_of(args)
    log.info("fitting a %s density to %s of %d molecules", args.kind,
             "all" if args.molecules is None or args.molecules >= len(smiles)
             else f"{args.molecules:,}", len(smiles))
    fitted = prior.fit(model, smiles, args.kind, molecules=args.molecules, seed=seed,
                       components=args.components, layers=args.layers, hidden=args.hidden,
                       steps=args.steps, progress=not args.quiet)
    fitted = prior.scaled(fitted, args.scale)
    checkpoint.save(fitted, out, {"prior_fitted_from": Path(args.input).name})
    fit = fitted.prior.get("fit", {})
    log.info("saved %s: %s density, %s; %s", out, args.kind, fitted.prior["fitted_on"],
             ", ".join(f"{k} {v}" for k, v in fit.items()))
    return 0


def _count(text: str) -> int | None:
    if text.lower() in ("all", "0"):
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or 'all', got {text!r}") from None
    if n < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 molecules, got {n}")
    return n


def add_commands(sub: argparse._SubParsersAction) -> None:
    from .cli_common import positive_int
    from .prior import DEFAULT_MOLECULES
    f = sub.add_parser("fit-prior", help="fit the density z is sampled from to a molecule file",
                       description="Fit a sampling density to the posteriors q(z|x) of the "
                       "molecules in a file (the model's training set, or molecules you want "
                       "samples to resemble) and save a copy of the model that samples from "
                       "it. The network is unchanged.")
    f.add_argument("input", help="molecules (.smi, .csv, .sdf; .gz ok)")
    f.add_argument("-o", "--output", required=True,
                   help="the new checkpoint, a .safetensors file (required, no default)")
    f.add_argument("--kind", choices=("flow", "gmm"), default="flow",
                   help="affine coupling flow, or diagonal Gaussian mixture")
    f.add_argument("--molecules", type=_count, default=DEFAULT_MOLECULES, metavar="N",
                   help="use a seeded random N of the file's molecules ('all' for every one)")
    f.add_argument("--components", type=positive_int, default=1024, help="gmm: components")
    f.add_argument("--layers", type=positive_int, default=8, help="flow: coupling layers")
    f.add_argument("--hidden", type=positive_int, default=256, help="flow: hidden units")
    f.add_argument("--steps", type=positive_int, default=4000, help="flow: training steps")
    f.add_argument("--scale", type=float, default=1.0, metavar="S",
                   help="save the density with its draws shrunk (< 1) or widened (> 1) by S: "
                   "a smaller spread trades novelty for molecules the decoder gets right")
    f.add_argument("--force", action="store_true", help="replace an existing -o file")
    add_input_args(f)
    add_model_args(f)
    f.set_defaults(func=cmd_fit_prior)
