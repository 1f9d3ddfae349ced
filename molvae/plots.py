"""Plots: property histograms, latent maps and training curves, PNG or SVG by suffix.

Drawn with matplotlib's object-oriented API (no pyplot state, no display); SVG plots keep their
text as text. Molecule pictures are in :mod:`molvae.draw`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .draw import PictureError, check_length, picture_kind, shorten

if TYPE_CHECKING:
    import numpy as np

__all__ = ["property_histograms", "latent_map", "training_curves", "LATENT_METHODS"]

LATENT_METHODS = ("tsne", "pca", "property")
LABEL_POINTS = 50  # latent maps with at most this many points name every point
TSNE_PCA_ABOVE = 5000  # t-SNE of more points than this starts from 50 principal components


def _figure(n_panels: int, width: float = 4.0, height: float = 3.2):
    # the object-oriented API: no pyplot, so no global figure state and no display backend
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]
    return fig, axes


def _save(fig, path: str | Path) -> None:
    import matplotlib
    kind = picture_kind(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # SVG text stays text (editable, searchable) instead of glyph outlines
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(str(path), format=kind, dpi=110)


def _finite(values: Sequence[float]) -> np.ndarray:
    import numpy as np
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


def _panel_range(samples: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """The x-range of one histogram panel.

    The core runs from the lower of both sets' 0.5th percentiles to the higher of their
    99.5th; it is widened to every sample, but by at most half its width on either side, so
    that a few absurd outliers cannot squash the panel (those are counted in the picture).
    """
    import numpy as np
    a, b = _finite(samples), _finite(reference)
    parts = [x for x in (a, b) if x.size]
    if not parts:
        return 0.0, 1.0
    lo = min(float(np.percentile(x, 0.5)) for x in parts)
    hi = max(float(np.percentile(x, 99.5)) for x in parts)
    width = hi - lo
    if a.size:
        lo = max(min(lo, float(a.min())), lo - 0.5 * width)
        hi = min(max(hi, float(a.max())), hi + 0.5 * width)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def property_histograms(samples: Mapping[str, Sequence[float]],
                        reference: Mapping[str, Sequence[float]], path: str | Path,
                        labels: tuple[str, str] = ("samples", "test")
                        ) -> dict[str, tuple[float, float]]:
    """One panel per property: sample distribution against the reference's.

    Each panel's x-range covers both distributions with their tails (:func:`_panel_range`);
    a panel that cannot show every sample says how many fall outside. Returns the range used
    per property.
    """
    import numpy as np
    names = [n for n in samples if n in reference]
    if not names:
        raise PictureError("no properties to plot")
    fig, axes = _figure(len(names))
    ranges = {}
    for ax, name in zip(axes, names):
        a, b = _finite(samples[name]), _finite(reference[name])
        lo, hi = _panel_range(a, b)
        ranges[name] = (lo, hi)
        bins = np.linspace(lo, hi, 51)
        ax.hist(b, bins=bins, density=True, alpha=0.5, label=f"{labels[1]} (n={len(b):,})")
        ax.hist(a, bins=bins, density=True, histtype="step", lw=1.8,
                label=f"{labels[0]} (n={len(a):,})")
        below, above = int((a < lo).sum()), int((a > hi).sum())
        ax.set_xlim(lo, hi)
        ax.set_xlabel(name)
        if below or above:
            beyond = ", ".join(part for part, k in ((f"{below:,} < {lo:.3g}", below),
                                                    (f"{above:,} > {hi:.3g}", above)) if k)
            ax.set_xlabel(f"{name}\n{below + above:,} of {len(a):,} samples outside the "
                          f"range ({beyond})", fontsize=8)
        ax.set_ylabel("density")
    axes[0].legend(fontsize=8, loc="upper left")
    _save(fig, path)
    return ranges


def _principal_axes(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(projection onto the first k principal axes, their explained-variance fractions);
    each axis's sign is fixed (largest loading positive) so results do not flip."""
    import numpy as np
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    vt = vt[:k]
    vt = vt * np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
    total = float((s ** 2).sum()) or 1.0
    return xc @ vt.T, (s[:k] ** 2) / total


def _tsne(x: np.ndarray, seed: int, perplexity: float) -> tuple[np.ndarray, float]:
    from sklearn.manifold import TSNE
    if len(x) > TSNE_PCA_ABOVE and x.shape[1] > 50:
        x, _ = _principal_axes(x, 50)
    perp = float(min(perplexity, max(1.0, (len(x) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto",
                random_state=seed)
    return tsne.fit_transform(x.astype(float)), perp


def _property_axes(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float]:
    """x-axis: the latent direction that best predicts the property (ridge regression);
    y-axis: the main principal axis of what is left. Returns (coords, R^2 of the fit)."""
    import numpy as np
    xc, vc = x - x.mean(0), v - v.mean()
    ridge = 1e-3 * float((xc ** 2).sum() / max(len(x), 1)) + 1e-12
    w = np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ vc)
    norm = float(np.linalg.norm(w))
    if norm == 0:
        coords, _ = _principal_axes(x, 2)
        return coords, 0.0
    u = w / norm
    along = xc @ u
    rest, _ = _principal_axes(xc - np.outer(along, u), 1)
    fit = xc @ w
    r2 = 1.0 - float(((vc - fit) ** 2).sum()) / (float((vc ** 2).sum()) or 1.0)
    return np.column_stack([along, rest[:, 0]]), r2


def _project(ax: Any, x: np.ndarray, v: np.ndarray, method: str, label: str, seed: int,
             perplexity: float) -> tuple[np.ndarray, str]:
    """The (N, 2) map coordinates of latents x by ``method``, with the axes labelled; and how
    they were made, for the title."""
    import numpy as np
    if method == "tsne":
        xy, perp = _tsne(x, seed, perplexity)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
        return xy, f"t-SNE, perplexity {perp:.3g}"
    if method == "pca":
        xy, explained = _principal_axes(x, 2)
        if xy.shape[1] < 2:
            xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
            explained = np.append(explained, 0.0)
        ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
        return xy, "PCA"
    xy, r2 = _property_axes(x, v)
    ax.set_xlabel(f"latent direction of {label} (linear fit R\u00b2 {r2:.2f})")
    ax.set_ylabel("main remaining axis")
    return xy, "property direction"


def _label_points(ax: Any, xy: np.ndarray, rows: np.ndarray, names: Sequence[str] | None
                  ) -> None:
    """Name each point (``names[row]``, else its row number), labels pointing inwards so that
    none runs off the panel."""
    ax.margins(x=0.1, y=0.08)
    middle = (xy[:, 0].min() + xy[:, 0].max()) / 2
    for (px, py), i in zip(xy, rows):
        text = shorten(str(names[i]), 24) if names is not None else str(i)
        right = px <= middle
        note = ax.annotate(text, (px, py), xytext=(4 if right else -4, 3), fontsize=7,
                           textcoords="offset points", ha="left" if right else "right")
        note.set_in_layout(False)


def latent_map(z: Sequence[Sequence[float]], values: Sequence[float], path: str | Path,
               label: str = "property", method: str = "tsne",
               names: Sequence[str] | None = None, seed: int = 0,
               perplexity: float = 30.0) -> np.ndarray:
    """A 2-D map of latent vectors, points coloured by a property (with a colourbar).

    ``method``: ``"tsne"`` (scikit-learn t-SNE with PCA initialisation and ``random_state``
    ``seed``; above ``TSNE_PCA_ABOVE`` points it runs on the first 50 principal components;
    ``perplexity`` is capped at a third of the points), ``"pca"`` (the
    first two principal axes, labelled with their explained variance) or ``"property"`` (the
    latent direction that best predicts the property against the main remaining axis). With
    at most ``LABEL_POINTS`` points each is labelled with ``names[i]`` or its index. Rows
    with a non-finite vector or value are left out.

    Returns the (N, 2) picture coordinates, row i for input i (NaN where left out); the same
    inputs and seed give the same coordinates.
    """
    import numpy as np
    if method not in LATENT_METHODS:
        raise PictureError(f"latent map method must be one of {', '.join(LATENT_METHODS)}, "
                           f"got {method!r}")
    picture_kind(path)  # a bad suffix fails before any work
    z = np.asarray(z, dtype=float)
    v = np.asarray(values, dtype=float)
    if z.ndim != 2 or len(z) != len(v):
        raise PictureError(f"need an (N, D) array of latents and N values, got {z.shape} and "
                           f"{v.shape}")
    check_length("names", names, len(z))
    keep = np.isfinite(z).all(1) & np.isfinite(v)
    x, vk = z[keep], v[keep]
    if len(x) < 3:
        raise PictureError("need at least 3 encoded molecules for a latent map")
    fig, (ax,) = _figure(1, width=5.5, height=4.5)
    xy, how = _project(ax, x, vk, method, label, seed, perplexity)
    n = len(xy)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=vk, s=float(np.clip(4000 / n, 4, 60)),
                    cmap="viridis", alpha=0.85, linewidths=0)
    fig.colorbar(sc, ax=ax, label=label)
    if n <= LABEL_POINTS:
        _label_points(ax, xy, np.flatnonzero(keep), names)
    ax.set_title(f"latent space, {n:,} molecules ({how})", fontsize=10)
    _save(fig, path)
    out = np.full((len(z), 2), np.nan)
    out[keep] = xy
    return out


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
