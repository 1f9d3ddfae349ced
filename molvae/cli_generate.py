"""CLI subcommands that make molecules: sample, interpolate, neighbours."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm.auto import tqdm

from .cli_common import (
    add_model_args,
    add_properties_arg,
    domain_warning,
    image_check,
    load_model,
    output_check,
    positive_int,
    property_columns,
    seed_of,
)
from .config import UsageError

log = logging.getLogger("molvae")


def _legend_properties(columns: list[str], rows: list[dict[str, str]]) -> dict[str, list]:
    """Numeric property columns for picture legends (at most three)."""
    out: dict[str, list] = {}
    for c in columns:
        if c in ("filters_reason", "novel"):
            continue
        out[c] = [r.get(c, "") for r in rows]
        if len(out) == 3:
            break
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    from .generate import LowAcceptanceError, iter_sample
    from .io import TableWriter
    if args.temperature is not None and not args.temperature >= 0:
        raise UsageError(f"--temperature must be a number >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be a number in (0, 1], got {args.top_p}")
    image_check(args.image)
    output_check(args.output)
    if args.properties:  # validate the names before any work
        property_columns(args, [])
    model = load_model(args)
    if args.prior_scale is not None:
        from .prior import scaled
        try:
            model = scaled(model, args.prior_scale)
        except ValueError as exc:  # the density's own check says what a scale must be
            raise UsageError(f"--prior-scale: {exc}") from None
    seed = seed_of(args)
    writer: TableWriter | None = None
    kept: list[str | None] = []
    kept_props: list[dict[str, str]] = []
    n_valid = i = 0
    bar = tqdm(total=args.n, desc="sampling", unit="mol", file=sys.stderr,
               disable=args.quiet or args.output is None)
    parts = iter_sample(model, args.n, temperature=0.0 if args.greedy else args.temperature,
                        seed=seed, batch_size=args.batch_size, consistent=not args.raw,
                        max_draws=args.max_draws, grammar=args.grammar_mask, top_p=args.top_p)
    try:
        for part in parts:
            cols, props = property_columns(args, list(part), model)
            if writer is None:
                writer = TableWriter(args.output, ["smiles", "index", "status", *cols])
            rows = []
            for s, p in zip(part, props):
                rows.append({"smiles": s, "index": i, "status": "ok" if s else "invalid", **p})
                n_valid += s is not None
                i += 1
            writer.write_rows(rows)
            if args.image:
                kept.extend(part)
                kept_props.extend(props)
            bar.update(len(part))
    except LowAcceptanceError as exc:
        st = exc.stats
        raise UsageError(f"only {st.accepted} grammar-consistent molecules of the {args.n} "
                         f"asked for in {st.drawn} draws (acceptance {st.acceptance:.4f}); "
                         "use --raw for raw samples or a larger --max-draws") from None
    finally:
        parts.close()
        bar.close()
        if writer is not None:
            writer.close()
    if args.raw:
        log.info("%d of %d samples valid", n_valid, args.n)
    else:
        st = parts.stats
        nucleus = f", top-p {st.top_p:g}" if st.top_p < 1 else ""
        log.info("%d consistent of %d drawn (acceptance %.2f; temperature %g%s%s)", st.accepted,
                 st.drawn, st.acceptance, st.temperature, nucleus,
                 ", grammar mask" if st.grammar else "")
    if args.image:
        from .draw import molecule_grid
        cols, _ = property_columns(args, [])
        cells = molecule_grid(kept, args.image,
                              properties=_legend_properties(cols, kept_props) or None)
        log.info("drew %d molecules to %s", cells, args.image)
    return 0


def _domain_warnings(found: list, names: list[str]) -> None:
    """One warning line per input the model does not reproduce or that lies outside its
    domain (:func:`molvae.domain.assess` results)."""
    for a, name in zip(found, names):
        if domain_warning(a):
            log.warning("%s %s: %s", name, a.input, domain_warning(a))


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .domain import assess
    from .generate import MoleculeError, interpolate
    from .io import TableWriter, flag_text
    from .properties import similarity
    image_check(args.image)
    output_check(args.output)
    if args.steps < 2:
        raise UsageError(f"--steps must be >= 2, got {args.steps}")
    model = load_model(args)
    seed = seed_of(args)
    try:
        path, flags = interpolate(model, args.start, args.end, steps=args.steps,
                                  method=args.method, temperature=args.temperature, seed=seed,
                                  with_consistency=True)
    except MoleculeError as exc:
        raise UsageError(str(exc).replace("\n", " ")) from None
    _domain_warnings(assess(model, [args.start, args.end], seed=seed), ["start", "end"])
    n = len(path)
    sim_start = similarity(path[0])(path)
    sim_end = similarity(path[-1])(path)
    cols, props = property_columns(args, path, model)
    writer = TableWriter(args.output, ["smiles", "step", "t", "kind", "status", "consistent",
                                       "similarity_to_start", "similarity_to_end", *cols])
    kinds = ["input"] + ["decoded"] * (n - 2) + ["input"]

    def fmt(v: float) -> str:
        return "" if v != v else f"{v:.3f}"

    writer.write_rows({"smiles": s, "step": i, "t": f"{i / (n - 1):.3f}", "kind": kinds[i],
                       "status": "ok" if s else "invalid", "consistent": flag_text(flags[i]),
                       "similarity_to_start": fmt(sim_start[i]),
                       "similarity_to_end": fmt(sim_end[i]), **props[i]}
                      for i, s in enumerate(path))
    writer.close()
    if args.image:
        from .draw import interpolation_strip
        interpolation_strip(path[1:-1], args.image, start=path[0], end=path[-1])
        log.info("drew the path to %s", args.image)
    return 0


def cmd_neighbours(args: argparse.Namespace) -> int:
    from .domain import assess
    from .generate import MoleculeError, neighbours
    from .io import TableWriter, flag_text
    image_check(args.image)
    output_check(args.output)
    if not args.scale > 0:
        raise UsageError(f"--scale must be a number > 0, got {args.scale}")
    model = load_model(args)
    seed = seed_of(args)
    try:
        found = neighbours(model, args.smiles, n=args.n, scale=args.scale, seed=seed,
                           temperature=args.temperature, with_consistency=True)
    except MoleculeError as exc:
        raise UsageError(str(exc).replace("\n", " ")) from None
    check = assess(model, [args.smiles], seed=seed)[0]
    _domain_warnings([check], ["input"])
    smiles = [check.smiles, *(s for s, _, _ in found)]
    sims = [1.0, *(v for _, v, _ in found)]
    flags = [None, *(ok for _, _, ok in found)]
    cols, props = property_columns(args, smiles, model)
    writer = TableWriter(args.output, ["smiles", "rank", "kind", "similarity", "consistent",
                                       *cols])
    writer.write_rows({"smiles": s, "rank": r, "kind": "input" if r == 0 else "neighbour",
                       "similarity": f"{v:.3f}", "consistent": flag_text(ok), **p}
                      for r, (s, v, ok, p) in enumerate(zip(smiles, sims, flags, props)))
    writer.close()
    if len(found) < args.n:
        log.warning("found %d distinct neighbours of the %d asked for; try a larger --scale",
                    len(found), args.n)
    if args.image:
        from .draw import molecule_grid
        legends = ["input"] + [f"#{r} sim {v:.2f}" for r, v in enumerate(sims[1:], 1)]
        molecule_grid(smiles, args.image, legends=legends,
                      properties=_legend_properties(cols, props) or None)
        log.info("drew %d molecules to %s", len(smiles), args.image)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sample", help="sample molecules from a model",
                       description="Sample molecules from the model's sampling density. By "
                       "default only grammar-consistent ones (the sampled SELFIES is the "
                       "canonical SELFIES of the molecule it decodes to), drawing more latent "
                       "points until -n are found; the acceptance rate is logged. The "
                       "molecules of a seed do not depend on -n or --batch-size: the first k "
                       "of -n 1000 are those of -n k.")
    s.add_argument("-n", type=positive_int, default=100, help="number of molecules")
    s.add_argument("-o", "--output", default=None,
                   help=".csv, .smi or .sdf (default: CSV on stdout)")
    s.add_argument("--temperature", type=float, default=None,
                   help="decoder temperature (default: the model's setting, 1.0 unless it "
                   "saves one)")
    s.add_argument("--greedy", action="store_true", help="argmax decoding (temperature 0)")
    s.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="nucleus sampling: each step samples from the fewest most likely "
                   "tokens holding P of the probability (default: the model's setting, 1 = "
                   "all unless it saves one)")
    s.add_argument("--prior-scale", type=float, default=None, metavar="S",
                   help="shrink (< 1) or widen (> 1) the latent density's draws by S (default: "
                   "the scale saved in the checkpoint, 1 unless fit-prior --scale set one)")
    s.add_argument("--raw", action="store_true",
                   help="keep every raw sample, inconsistent and invalid ones included")
    s.add_argument("--grammar-mask", action=argparse.BooleanOptionalAction, default=None,
                   help="decode under the SELFIES grammar mask (only tokens the SELFIES "
                   "decoder reads as written) or without it (default: the model's setting)")
    s.add_argument("--max-draws", type=positive_int, default=None,
                   help="give up when -n consistent molecules are not found in this many draws "
                   "(default: 20 * n + 1000)")
    s.add_argument("--batch-size", type=positive_int, default=1000,
                   help="molecules decoded per call (memory; never changes the molecules)")
    s.add_argument("--image", default=None,
                   help="also draw a molecule grid (.png or .svg) (default: none)")
    add_properties_arg(s)
    add_model_args(s)
    s.set_defaults(func=cmd_sample)

    i = sub.add_parser("interpolate", help="decode a latent path between two molecules",
                       description="Decode a path between two molecules' latent points. The "
                       "first and last rows are the inputs themselves (standardized); a "
                       "warning says when the model does not reproduce an input.")
    i.add_argument("start", help="SMILES")
    i.add_argument("end", help="SMILES")
    i.add_argument("--steps", type=int, default=10, help="rows, both inputs included")
    i.add_argument("--method", default="slerp", choices=["slerp", "linear"],
                   help="path in latent space")
    i.add_argument("--temperature", type=float, default=0.0,
                   help="decoder temperature (0: greedy)")
    i.add_argument("-o", "--output", default=None,
                   help=".csv, .smi or .sdf (default: CSV on stdout)")
    i.add_argument("--image", default=None,
                   help="also draw the strip (.png or .svg) (default: none)")
    add_properties_arg(i)
    add_model_args(i)
    i.set_defaults(func=cmd_interpolate)

    nb = sub.add_parser("neighbours", aliases=["neighbors"],
                        help="molecules decoded near one molecule",
                        description="Decode points around a molecule's latent mean; the first "
                        "row is the molecule itself, then the distinct neighbours, most "
                        "similar (Tanimoto, Morgan r=2) first.")
    nb.add_argument("smiles", help="SMILES")
    nb.add_argument("-n", type=positive_int, default=10, help="neighbours to return")
    nb.add_argument("--scale", type=float, default=0.5,
                    help="standard deviation of the latent noise around the molecule")
    nb.add_argument("--temperature", type=float, default=0.0,
                    help="decoder temperature (0: greedy)")
    nb.add_argument("-o", "--output", default=None,
                    help=".csv, .smi or .sdf (default: CSV on stdout)")
    nb.add_argument("--image", default=None,
                    help="also draw a grid (.png or .svg) (default: none)")
    add_properties_arg(nb)
    add_model_args(nb)
    nb.set_defaults(func=cmd_neighbours)
