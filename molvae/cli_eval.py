"""CLI subcommands that measure and draw: evaluate, plot, latent-map."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .cli_common import add_model_args, image_check, load_model, positive_int, seed_of
from .config import UsageError

log = logging.getLogger("molvae")


def _read_smiles_file(path: str, column: str | None = None) -> list[str]:
    from .readers import read_molecules
    raw = read_molecules(path, column)
    return [t if t is not None and raw.problem(i) is None else ""
            for i, t in enumerate(raw.texts)]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate, format_table
    if (args.samples is None) == (args.model is None and not args.bundled):
        raise UsageError("give a samples file, or --model M (or --bundled) with -n N to sample")
    image_check(args.plot)
    if args.samples is not None:
        samples: list[str | None] = list(_read_smiles_file(args.samples, args.smiles_column))
    else:
        from .generate import sample
        model = load_model(args)
        samples = sample(model, args.n, temperature=args.temperature, seed=seed_of(args))
    refs = {k: (_read_smiles_file(getattr(args, k)) if getattr(args, k) else None)
            for k in ("test", "test_scaffolds", "train")}
    res = evaluate(samples, test=refs["test"], test_scaffolds=refs["test_scaffolds"],
                   train=refs["train"], progress=not args.quiet)
    print(format_table(res))
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2) + "\n")
    if args.plot:
        from .metrics import molecule_properties, reference_properties
        from .plots import property_histograms
        ref = (molecule_properties(refs["test"]) if refs["test"]
               else reference_properties("test", progress=not args.quiet))
        property_histograms(molecule_properties(samples), ref, args.plot)
        log.info("wrote %s", args.plot)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import training_curves
    out = args.output or str(Path(args.run) / "training_curves.png")
    image_check(out)
    training_curves(args.run, out)
    log.info("wrote %s", out)
    return 0


def cmd_latent_map(args: argparse.Namespace) -> int:
    import numpy as np

    from .generate import encode, prepare_inputs
    from .metrics import load_moses, molecule_properties
    from .plots import latent_map
    image_check(args.output)
    if args.n < 3:
        raise UsageError(f"-n {args.n}: a latent map needs at least 3 molecules")
    names: list[str] | None = None
    if args.molecules:
        from .readers import read_molecules
        raw = read_molecules(args.molecules, args.smiles_column, args.id_column)
        keep = [i for i in range(len(raw.texts)) if raw.problem(i) is None]
        mols = [raw.texts[i] or "" for i in keep]
        names = [raw.ids[i] or f"line {raw.lines[i]}" for i in keep]
    else:
        mols = load_moses("test")
    seed = seed_of(args)
    if len(mols) > args.n:  # a seeded random subset, in file order
        pick = np.sort(np.random.default_rng(seed).choice(len(mols), args.n, replace=False))
        mols = [mols[i] for i in pick]
        names = [names[i] for i in pick] if names else None
    model = load_model(args)
    prepared = prepare_inputs(model, mols).smiles
    good = [i for i, s in enumerate(prepared) if s is not None]
    if len(good) < 3:
        raise UsageError(f"only {len(good)} of the molecules could be encoded; need at least 3")
    if len(good) < len(mols):
        log.warning("%d of %d molecules could not be encoded and are left out",
                    len(mols) - len(good), len(mols))
    smiles = [prepared[i] for i in good]
    values = molecule_properties(smiles)[args.property]
    latent_map(encode(model, smiles).numpy(), values, args.output, label=args.property,
               method=args.method, names=[names[i] for i in good] if names else None)
    log.info("wrote %s (%d molecules, %s, coloured by %s)", args.output, len(good),
             args.method, args.property)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("evaluate", help="MOSES metrics of samples (or of a model's samples)")
    v.add_argument("samples", nargs="?", default=None,
                   help=".csv/.smi of generated SMILES (default: sample --model or --bundled)")
    v.add_argument("-n", type=positive_int, default=30000, help="samples to draw with --model")
    v.add_argument("--bundled", action="store_true", help="sample the bundled model")
    v.add_argument("--temperature", type=float, default=None,
                   help="decoder temperature when sampling a model (default: the model's "
                   "setting)")
    v.add_argument("--smiles-column", default=None,
                   help="CSV column holding SMILES (default: detected)")
    v.add_argument("--test", default=None, help="reference set (default: MOSES test)")
    v.add_argument("--test-scaffolds", default=None,
                   help="scaffold reference set (default: MOSES scaffold test)")
    v.add_argument("--train", default=None, help="novelty reference (default: MOSES train)")
    v.add_argument("-o", "--output", default=None,
                   help="write the metrics as JSON (default: the table only)")
    v.add_argument("--plot", default=None,
                   help="property distributions picture (.png/.svg) (default: none)")
    add_model_args(v)
    v.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="training curves of a run folder")
    p.add_argument("run", help="run folder (or its metrics.csv)")
    p.add_argument("-o", "--output", default=None,
                   help=".png or .svg (default: RUN/training_curves.png)")
    p.set_defaults(func=cmd_plot)

    m = sub.add_parser("latent-map", help="2-D map of encoded molecules, coloured by a property",
                       description="Encode molecules and draw their latent points in 2-D "
                       "(t-SNE by default), coloured by a property; few points are labelled "
                       "with their names.")
    m.add_argument("molecules", nargs="?", default=None,
                   help=".smi/.csv/.sdf to encode (default: the MOSES test set)")
    m.add_argument("-n", type=int, default=2000,
                   help="at most this many molecules, a seeded random subset")
    m.add_argument("--property", default="QED", choices=["logP", "SA", "QED", "weight"],
                   help="colour")
    m.add_argument("--method", default="tsne", choices=["tsne", "pca", "property"],
                   help="2-D projection: t-SNE, the first two principal components, or the "
                        "latent direction that best predicts the property against the "
                        "first principal component")
    m.add_argument("--smiles-column", default=None,
                   help="CSV column holding SMILES (default: detected)")
    m.add_argument("--id-column", default=None,
                   help="column naming each molecule (default: an id/name column, .smi names)")
    m.add_argument("-o", "--output", default="latent_map.png", help=".png or .svg")
    add_model_args(m)
    m.set_defaults(func=cmd_latent_map)
