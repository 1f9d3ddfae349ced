"""CLI subcommands over the generation API: sample, encode, interpolate."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .config import UsageError, resolve_device

log = logging.getLogger("molvae")


def _load_model(args: argparse.Namespace):
    from . import load
    return load(args.model, device=str(resolve_device(args.device)))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint or run folder (default: bundled)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--seed", type=int, default=0)


def _image_check(path: str | None) -> None:
    if path and Path(path).suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--image {path}: must end in .png or .svg")


def cmd_sample(args: argparse.Namespace) -> int:
    from .generate import iter_sample
    from .io import TableWriter
    if args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    if not args.temperature >= 0:
        raise UsageError(f"--temperature must be a number >= 0, got {args.temperature}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    _image_check(args.image)
    model = _load_model(args)
    out = TableWriter(args.output, ["smiles", "index", "status"])
    kept: list[str | None] = []
    n_valid = i = 0
    bar = tqdm(total=args.n, desc="sampling", unit="mol", file=sys.stderr,
               disable=args.quiet or args.output is None)
    try:
        for part in iter_sample(model, args.n, temperature=0.0 if args.greedy else
                                args.temperature, seed=args.seed, batch_size=args.batch_size):
            rows = []
            for s in part:
                rows.append({"smiles": s, "index": i, "status": "ok" if s else "invalid"})
                n_valid += s is not None
                i += 1
            out.write_rows(rows)
            if args.image:
                kept.extend(part)
            bar.update(len(part))
    finally:
        bar.close()
        out.close()
    log.info("%d of %d samples valid", n_valid, args.n)
    if args.image:
        from .draw import molecule_grid
        cells = molecule_grid(kept, args.image)
        log.info("drew %d molecules to %s", cells, args.image)
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from .data import read_molecules
    from .generate import elbo, encode, prepare_inputs
    from .io import TableWriter
    if args.elbo_samples < 1:
        raise UsageError(f"--elbo-samples must be >= 1, got {args.elbo_samples}")
    model = _load_model(args)
    raw = read_molecules(args.input, args.smiles_column)
    texts = [t if i not in raw.errors else None for i, t in enumerate(raw.texts)]
    prep = prepare_inputs(model, texts)
    problems = {i: (status, reason) for i, _, status, reason in prep.problems}
    for i, reason in raw.errors.items():
        problems[i] = ("invalid", reason)
    z = encode(model, texts, errors="nan", sample_posterior=args.sample, seed=args.seed)
    if problems:
        log.warning("%d of %d inputs could not be encoded (their rows are NaN)",
                    len(problems), len(texts))
    out_path = args.output
    if out_path and out_path.endswith(".npy"):
        if args.elbo:
            raise UsageError("--elbo needs a table output (.csv or stdout), not .npy")
        np.save(out_path, z.numpy())
        log.info("wrote %s (%d x %d)", out_path, *z.shape)
        return 0
    if out_path and not out_path.endswith(".csv"):
        raise UsageError(f"-o {out_path}: encode writes .npy or .csv")
    cols = ["line", "input", "status", "reason"]
    extra = {}
    if args.elbo:
        extra = elbo(model, texts, n_samples=args.elbo_samples, seed=args.seed)
        cols += ["neg_elbo", "recon", "kl"]
    cols += [f"z{j}" for j in range(z.shape[1])]
    writer = TableWriter(out_path, cols)
    rows = []
    for i, text in enumerate(raw.texts):
        status, reason = problems.get(i, ("ok", ""))
        row = {"line": raw.lines[i], "input": text, "status": status, "reason": reason}
        for k in ("neg_elbo", "recon", "kl"):
            if k in extra:
                v = extra[k][i]
                row[k] = "" if np.isnan(v) else f"{v:.4f}"
        for j in range(z.shape[1]):
            v = float(z[i, j])
            row[f"z{j}"] = "" if np.isnan(v) else f"{v:.6g}"
        rows.append(row)
    writer.write_rows(rows)
    writer.close()
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .generate import MoleculeError, interpolate
    from .io import TableWriter
    _image_check(args.image)
    model = _load_model(args)
    try:
        path = interpolate(model, args.start, args.end, steps=args.steps, method=args.method,
                           temperature=args.temperature, seed=args.seed)
    except MoleculeError as exc:
        raise UsageError(str(exc).replace("\n", " ")) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    writer = TableWriter(args.output, ["smiles", "step", "t", "status"])
    n = len(path)
    writer.write_rows({"smiles": s, "step": i, "t": f"{i / (n - 1):.3f}",
                       "status": "ok" if s else "invalid"} for i, s in enumerate(path))
    writer.close()
    if args.image:
        from .draw import interpolation_strip
        interpolation_strip(path, args.image)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sample", help="sample molecules from a model",
                       description="Sample molecules from the model's prior.")
    s.add_argument("-n", type=int, default=100, help="number of molecules")
    s.add_argument("-o", "--output", default=None, help=".csv, .smi or .sdf (default: stdout)")
    s.add_argument("--temperature", type=float, default=1.0, help="decoder temperature")
    s.add_argument("--greedy", action="store_true", help="argmax decoding")
    s.add_argument("--batch-size", type=int, default=1000)
    s.add_argument("--image", default=None, help="also draw a molecule grid (.png or .svg)")
    _add_model_args(s)
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("encode", help="encode molecules to latent vectors",
                       description="Encode a molecule file to posterior means (or samples).")
    e.add_argument("input", help=".smi, .csv or .sdf file (optionally .gz)")
    e.add_argument("-o", "--output", default=None, help=".npy or .csv (default: CSV stdout)")
    e.add_argument("--smiles-column", default=None)
    e.add_argument("--sample", action="store_true", help="posterior samples, not means")
    e.add_argument("--elbo", action="store_true", help="add per-molecule -ELBO columns")
    e.add_argument("--elbo-samples", type=int, default=8)
    _add_model_args(e)
    e.set_defaults(func=cmd_encode)

    i = sub.add_parser("interpolate", help="decode a path between two molecules")
    i.add_argument("start", help="SMILES")
    i.add_argument("end", help="SMILES")
    i.add_argument("--steps", type=int, default=10)
    i.add_argument("--method", default="slerp", choices=["slerp", "linear"])
    i.add_argument("--temperature", type=float, default=0.0)
    i.add_argument("-o", "--output", default=None, help=".csv, .smi or .sdf (default: stdout)")
    i.add_argument("--image", default=None, help="also draw the strip (.png or .svg)")
    _add_model_args(i)
    i.set_defaults(func=cmd_interpolate)
    add_eval_commands(sub)


def _read_smiles_file(path: str, column: str | None = None) -> list[str]:
    from .data import read_molecules
    raw = read_molecules(path, column)
    return [t if t is not None else "" for t in raw.texts]


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .metrics import evaluate, format_table
    if (args.samples is None) == (args.model is None and not args.bundled):
        raise UsageError("give a samples file, or --model M (or --bundled) with -n N to sample")
    if args.samples is not None:
        samples: list[str | None] = list(_read_smiles_file(args.samples, args.smiles_column))
    else:
        from .generate import sample
        model = _load_model(args)
        samples = sample(model, args.n, temperature=args.temperature, seed=args.seed)
    refs = {k: (_read_smiles_file(getattr(args, k)) if getattr(args, k) else None)
            for k in ("test", "test_scaffolds", "train")}
    res = evaluate(samples, test=refs["test"], test_scaffolds=refs["test_scaffolds"],
                   train=refs["train"], progress=not args.quiet)
    print(format_table(res))
    if args.output:
        from pathlib import Path
        Path(args.output).write_text(json.dumps(res, indent=2) + "\n")
    if args.plot:
        from .draw import property_histograms
        from .metrics import load_moses, molecule_properties
        ref = refs["test"] or load_moses("test")
        property_histograms(molecule_properties(samples), molecule_properties(ref), args.plot)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .draw import training_curves
    out = args.output or str(Path(args.run) / "training_curves.png")
    training_curves(args.run, out)
    log.info("wrote %s", out)
    return 0


def cmd_latent_map(args: argparse.Namespace) -> int:
    import numpy as np

    from .draw import latent_map
    from .generate import encode, prepare_inputs
    from .metrics import load_moses, molecule_properties
    if args.n < 3:
        raise UsageError(f"-n {args.n}: a latent map needs at least 3 molecules")
    mols = (_read_smiles_file(args.molecules, args.smiles_column) if args.molecules
            else load_moses("test"))
    if len(mols) > args.n:  # a seeded random subset, in file order
        rng = np.random.default_rng(0 if args.seed is None else args.seed)
        mols = [mols[i] for i in np.sort(rng.choice(len(mols), args.n, replace=False))]
    model = _load_model(args)
    good = [s for s in prepare_inputs(model, mols).smiles if s is not None]
    if len(good) < len(mols):
        log.warning("%d of %d molecules could not be encoded and are left out",
                    len(mols) - len(good), len(mols))
    if len(good) < 3:
        raise UsageError(f"only {len(good)} of the molecules could be encoded; need at least 3")
    values = molecule_properties(good)[args.property]
    latent_map(encode(model, good).numpy(), values, args.output, label=args.property)
    log.info("wrote %s (%d molecules, coloured by %s)", args.output, len(good), args.property)
    return 0


def add_eval_commands(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("evaluate", help="MOSES metrics of samples (or of a model's samples)")
    v.add_argument("samples", nargs="?", default=None, help=".csv/.smi of generated SMILES")
    v.add_argument("-n", type=int, default=30000, help="samples to draw with --model")
    v.add_argument("--bundled", action="store_true", help="sample the bundled model")
    v.add_argument("--temperature", type=float, default=1.0)
    v.add_argument("--smiles-column", default=None)
    v.add_argument("--test", default=None, help="reference set (default: MOSES test)")
    v.add_argument("--test-scaffolds", default=None, help="(default: MOSES scaffold test)")
    v.add_argument("--train", default=None, help="novelty reference (default: MOSES train)")
    v.add_argument("-o", "--output", default=None, help="write the metrics as JSON")
    v.add_argument("--plot", default=None, help="property distributions picture (.png/.svg)")
    _add_model_args(v)
    v.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="training curves of a run folder")
    p.add_argument("run", help="run folder (or its metrics.csv)")
    p.add_argument("-o", "--output", default=None, help=".png or .svg (default: RUN/...png)")
    p.set_defaults(func=cmd_plot)

    m = sub.add_parser("latent-map", help="2-D PCA map of encoded molecules, coloured by a "
                       "property")
    m.add_argument("molecules", nargs="?", default=None,
                   help=".smi/.csv/.sdf to encode (default: the MOSES test set)")
    m.add_argument("-n", type=int, default=5000, help="at most this many molecules, a seeded "
                   "random subset (default 5000)")
    m.add_argument("--property", default="QED", choices=["logP", "SA", "QED", "weight"])
    m.add_argument("--smiles-column", default=None)
    m.add_argument("-o", "--output", default="latent_map.png", help=".png or .svg")
    _add_model_args(m)
    m.set_defaults(func=cmd_latent_map)
