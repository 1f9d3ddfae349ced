"""Pictures: molecule grids and interpolation strips (RDKit drawing), PNG or SVG by suffix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rdkit import Chem
from rdkit.Chem.Draw import rdMolDraw2D
from rdkit.Geometry import Point2D

from .chem import mol_from_smiles

__all__ = ["molecule_grid", "interpolation_strip", "PictureError"]


class PictureError(ValueError):
    """A picture could not be written (bad suffix, nothing to draw)."""


def _kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise PictureError(f"{path}: picture files must end in .png or .svg")
    return suffix[1:]


def molecule_grid(smiles: Sequence[str | None], path: str | Path,
                  legends: Sequence[str] | None = None, per_row: int = 5,
                  size: tuple[int, int] = (250, 200)) -> int:
    """Draw every molecule (no cap) in a labelled grid; invalid ones as marked empty cells.

    Returns the number of cells drawn.
    """
    kind = _kind(path)
    if not smiles:
        raise PictureError("nothing to draw: no molecules")
    mols, labels = [], []
    for i, s in enumerate(smiles):
        m = mol_from_smiles(s) if s else None
        base = legends[i] if legends is not None else f"#{i}"
        if m is None:
            mols.append(Chem.Mol())
            labels.append(f"{base}: invalid")
        else:
            mols.append(m)
            labels.append(base)
    per_row = max(1, min(per_row, len(mols)))
    n_rows = -(-len(mols) // per_row)
    w, h = size
    # the low-level drawer, not Draw.MolsToGridImage: no PIL needed and no cap on the count
    cls = rdMolDraw2D.MolDraw2DSVG if kind == "svg" else rdMolDraw2D.MolDraw2DCairo
    drawer = cls(per_row * w, n_rows * h, w, h)
    drawer.drawOptions().legendFontSize = 14
    drawer.DrawMolecules(mols, legends=labels)
    # RDKit draws no legend for an empty molecule: write the marker in pixel coordinates
    drawer.SetOffset(0, 0)
    for i, m in enumerate(mols):
        if m.GetNumAtoms() == 0:
            x, y = (i % per_row) * w + w / 2, (i // per_row) * h + h / 2
            drawer.DrawString(labels[i], Point2D(x, y), rawCoords=True)
    drawer.FinishDrawing()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    blob = drawer.GetDrawingText()
    if kind == "svg":
        Path(path).write_text(blob)
    else:
        Path(path).write_bytes(blob)
    return len(mols)


def interpolation_strip(smiles: Sequence[str | None], path: str | Path,
                        size: tuple[int, int] = (220, 180)) -> int:
    """One row from start to end, each cell labelled with its position t in [0, 1]."""
    n = len(smiles)
    legends = [f"t={i / max(n - 1, 1):.2f}" for i in range(n)]
    return molecule_grid(smiles, path, legends=legends, per_row=n, size=size)


# ------------------------------------------------------------------------- matplotlib plots
def _figure(n_panels: int, width: float = 4.0, height: float = 3.2):
    # the object-oriented API: no pyplot, so no global figure state and no display backend
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]
    return fig, axes


def _save(fig, path: str | Path) -> None:
    kind = _kind(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format=kind, dpi=110)


def property_histograms(samples: dict[str, Sequence[float]], reference: dict[str, Sequence[float]],
                        path: str | Path, labels: tuple[str, str] = ("samples", "test")) -> None:
    """One panel per property: sample distribution against the reference's."""
    import numpy as np
    names = [n for n in samples if n in reference]
    if not names:
        raise PictureError("no properties to plot")
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names):
        a = np.asarray(samples[name], dtype=float)
        b = np.asarray(reference[name], dtype=float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        both = np.concatenate([a, b]) if len(a) + len(b) else np.zeros(1)
        lo, hi = np.percentile(both, [0.5, 99.5])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
        ax.hist(b, bins=bins, density=True, alpha=0.5, label=f"{labels[1]} (n={len(b)})")
        ax.hist(a, bins=bins, density=True, histtype="step", lw=1.8,
                label=f"{labels[0]} (n={len(a)})")
        ax.set_xlabel(name)
        ax.set_ylabel("density")
    axes[0].legend(fontsize=8)
    _save(fig, path)


def latent_map(z: Sequence[Sequence[float]], values: Sequence[float], path: str | Path,
               label: str = "property") -> None:
    """PCA of latent vectors to 2-D, points coloured by a property."""
    import numpy as np
    z = np.asarray(z, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(z).all(1) & np.isfinite(v)
    z, v = z[keep], v[keep]
    if len(z) < 3:
        raise PictureError("need at least 3 encoded molecules for a latent map")
    zc = z - z.mean(0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    xy = zc @ vt[:2].T
    explained = (s[:2] ** 2) / (s ** 2).sum()
    fig, (ax,) = _figure(1, width=5.5, height=4.5)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=v, s=4, cmap="viridis", alpha=0.8, linewidths=0)
    fig.colorbar(sc, ax=ax, label=label)
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    ax.set_title(f"latent space, {len(z)} molecules")
    _save(fig, path)


def training_curves(metrics_csv: str | Path, path: str | Path) -> None:
    """Loss, reconstruction, KL/beta and accuracy panels from a run's metrics.csv."""
    import csv
    metrics_csv = Path(metrics_csv)
    if metrics_csv.is_dir():
        metrics_csv = metrics_csv / "metrics.csv"
    if not metrics_csv.exists():
        raise PictureError(f"{metrics_csv}: no metrics.csv to plot")
    with metrics_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise PictureError(f"{metrics_csv}: no rows yet")

    def series(split: str, key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            if r["split"] == split and r.get(key) not in (None, ""):
                xs.append(float(r["step"]))
                ys.append(float(r[key]))
        return xs, ys

    panels = [("loss", ["loss", "recon"]), ("KL (nats)", ["kl"]),
              ("accuracy", ["token_acc", "recon_exact"]), ("active units", ["active_units"])]
    fig, axes = _figure(len(panels))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            for split, style in (("train", "-"), ("val", "o-")):
                xs, ys = series(split, key)
                if xs:
                    ax.plot(xs, ys, style, ms=3, lw=1.2, label=f"{split} {key}")
        if title == "KL (nats)":
            xs, ys = series("train", "beta")
            if xs:
                twin = ax.twinx()
                twin.plot(xs, ys, ":", color="gray", label="beta")
                twin.set_ylabel("beta")
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    _save(fig, path)
