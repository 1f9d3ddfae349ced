"""Pictures: molecule grids, interpolation strips and plots, PNG or SVG by suffix.

Molecules are drawn with RDKit's low-level drawer (no PIL, no cap on the count); plots with
matplotlib's object-oriented API (no pyplot state, no display). SVG grids carry a hover title
per cell with the full SMILES and labels; SVG plots keep their text as text.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from rdkit import Chem
from rdkit.Chem.Draw import rdMolDraw2D
from rdkit.Geometry import Point2D

from .chem import mol_from_smiles

if TYPE_CHECKING:
    import numpy as np

__all__ = ["molecule_grid", "interpolation_strip", "property_histograms", "latent_map",
           "training_curves", "PictureError", "LATENT_METHODS"]

LATENT_METHODS = ("tsne", "pca", "property")
LABEL_POINTS = 50  # latent maps with at most this many points name every point
TSNE_PCA_ABOVE = 5000  # t-SNE of more points than this starts from 50 principal components
_LEGEND_FONT, _MIN_FONT = 14.0, 9.0  # legend font sizes, pixels
_LINE = 17  # pixels per legend line
_CHAR = 0.6  # a legend character's width per pixel of font size (a generous estimate)


class PictureError(ValueError):
    """A picture could not be written (bad suffix, nothing to draw, mismatched labels)."""


def _kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise PictureError(f"{path}: picture files must end in .png or .svg")
    return suffix[1:]


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked by an ellipsis."""
    return text if len(text) <= limit else text[:max(limit - 3, 1)] + "..."


def _chars(width: int) -> int:
    """How many legend characters fit a cell ``width`` pixels wide at the full font size."""
    return max(8, int((width - 12) / (_CHAR * _LEGEND_FONT)))


def _number(value: Any) -> str:
    """A property value for a legend: "-" when missing, fewer decimals as it grows. Strings
    (table cells) are read as numbers where they are; other text is shown as it is."""
    if isinstance(value, str):
        value = value.strip()
        if value.lstrip("+-").isdigit():
            return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-" if value in (None, "") else str(value)
    if math.isnan(v):
        return "-"
    if isinstance(value, numbers.Integral) or (v.is_integer() and abs(v) >= 100):
        return f"{v:.0f}"
    if abs(v) < 1:
        return f"{v:.2f}"
    return f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


def _property_line(properties: Mapping[str, Sequence[Any]] | None, i: int) -> str | None:
    if not properties:
        return None
    return "  ".join(f"{name} {_number(values[i])}" for name, values in properties.items())


def _check_length(what: str, values: Sequence[Any] | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise PictureError(f"{what} has {len(values)} entries for {n} molecules")


# ------------------------------------------------------------------------ molecule drawings
def _fit(drawer: Any, text: str, width: float) -> str:
    """Set a font size at which ``text`` fits ``width`` pixels (cutting it if even the
    smallest is too wide) and return the text to draw."""
    size = min(_LEGEND_FONT, width / (_CHAR * max(len(text), 1)))
    if size < _MIN_FONT:
        size = _MIN_FONT
        text = _shorten(text, int(width / (_CHAR * size)))
    drawer.SetFontSize(size)
    return text


def _draw_cells(smiles: Sequence[str | None], lines: Sequence[Sequence[str]],
                path: str | Path, per_row: int, size: tuple[int, int],
                framed: Sequence[int] = ()) -> int:
    """Draw one molecule per cell with its legend lines below; invalid ones as marked cells.

    RDKit only reserves the legend space (its multi-line legends overlap): the lines are
    drawn here, each shrunk to fit the cell. Cells in ``framed`` get a blue frame.
    """
    kind = _kind(path)
    if not smiles:
        raise PictureError("nothing to draw: no molecules")
    mols = []
    for s in smiles:
        m = mol_from_smiles(s) if isinstance(s, str) and s.strip() else None
        mols.append(Chem.Mol() if m is None else m)
    per_row = max(1, min(per_row, len(mols)))
    n_rows = -(-len(mols) // per_row)
    w, h = size
    n_lines = max(len(cell) for cell in lines)
    legend_h = n_lines * _LINE + 6
    cls = rdMolDraw2D.MolDraw2DSVG if kind == "svg" else rdMolDraw2D.MolDraw2DCairo
    drawer = cls(per_row * w, n_rows * h, w, h)
    opts = drawer.drawOptions()
    opts.legendFraction = min(0.5, legend_h / h)
    opts.setLegendColour((1.0, 1.0, 1.0, 0.0))
    # each molecule as large as its cell allows, small ones not blown up
    opts.drawMolsSameScale = False
    opts.fixedBondLength = 30
    drawer.DrawMolecules(mols, legends=[" " if n_lines else ""] * len(mols))
    drawer.SetOffset(0, 0)
    drawer.SetFillPolys(False)
    for i, (m, cell) in enumerate(zip(mols, lines)):
        x0, y0 = (i % per_row) * w, (i // per_row) * h
        invalid = m.GetNumAtoms() == 0
        if invalid or i in framed:
            drawer.SetColour((0.75, 0.75, 0.75) if invalid else (0.3, 0.45, 0.8))
            drawer.DrawRect(Point2D(x0 + 4, y0 + 4), Point2D(x0 + w - 4, y0 + h - 4),
                            rawCoords=True)
        if invalid:  # RDKit draws nothing for an empty molecule: the marker mid-cell
            cell = [*cell, "(invalid)"]
            top = y0 + h / 2 - (len(cell) - 1) * _LINE / 2
            drawer.SetColour((0.6, 0.0, 0.0))
        else:
            top = y0 + h - legend_h + 3 + _LINE / 2
            drawer.SetColour((0.0, 0.0, 0.0))
        for k, text in enumerate(cell):
            text = _fit(drawer, text, w - 12)
            drawer.DrawString(text, Point2D(x0 + w / 2, top + k * _LINE), 0, rawCoords=True)
    drawer.FinishDrawing()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    blob = drawer.GetDrawingText()
    if kind == "svg":
        valid = [m.GetNumAtoms() > 0 for m in mols]
        Path(path).write_text(_with_titles(blob, smiles, valid, lines, per_row, size))
    else:
        Path(path).write_bytes(blob)
    return len(mols)


def _with_titles(svg: str, smiles: Sequence[str | None], valid: Sequence[bool],
                 lines: Sequence[Sequence[str]], per_row: int, size: tuple[int, int]) -> str:
    """Add an invisible rectangle per cell whose title (a hover tooltip) holds the cell's
    legend and full SMILES: RDKit writes legend text as outlines, so it is not searchable."""
    w, h = size
    rects = ["<g class='molvae-cells'>"]
    for i, (s, ok, cell) in enumerate(zip(smiles, valid, lines)):
        if ok:
            source = f"SMILES {s}"
        else:
            source = f"invalid input {s!r}" if s else "invalid: no molecule"
        title = " | ".join([*cell, source])
        rects.append(f"<rect class='molvae-cell' x='{(i % per_row) * w}' y='{(i // per_row) * h}'"
                     f" width='{w}' height='{h}' fill='none' pointer-events='all'>"
                     f"<title>{escape(title)}</title></rect>")
    rects.append("</g>")
    end = svg.rindex("</svg>")
    return svg[:end] + "\n".join(rects) + "\n" + svg[end:]


def molecule_grid(smiles: Sequence[str | None], path: str | Path,
                  legends: Sequence[str] | None = None, per_row: int = 5,
                  size: tuple[int, int] = (250, 200),
                  properties: Mapping[str, Sequence[Any]] | None = None,
                  ids: Sequence[str | None] | None = None) -> int:
    """Draw every molecule (no cap) in a labelled grid; invalid ones as marked cells.

    Each cell's legend, one line each: ``legends[i]`` when given (a caption such as a rank),
    then ``ids[i]`` when given or else the SMILES (cut with "..." when too long for the cell),
    then the chosen ``properties`` ({name: values}, one value per molecule), e.g.
    "QED 0.71  SA 2.3" (missing values as "-"). ``size`` is one cell in pixels.

    Returns the number of cells drawn.
    """
    n = len(smiles)
    _check_length("legends", legends, n)
    _check_length("ids", ids, n)
    for name, values in (properties or {}).items():
        _check_length(f"property {name!r}", values, n)
    limit = _chars(size[0])
    lines = []
    for i, s in enumerate(smiles):
        cell = [str(legends[i])] if legends is not None else []
        if ids is not None and ids[i] not in (None, ""):
            cell.append(_shorten(str(ids[i]), limit))
        elif isinstance(s, str) and s.strip():
            cell.append(_shorten(s.strip(), limit))
        elif legends is None:
            cell.append(f"#{i}")
        prop = _property_line(properties, i)
        if prop is not None:
            cell.append(prop)
        lines.append(cell)
    return _draw_cells(smiles, lines, path, per_row, size)


def interpolation_strip(smiles: Sequence[str | None], path: str | Path,
                        start: str | None = None, end: str | None = None,
                        size: tuple[int, int] = (220, 180),
                        properties: Mapping[str, Sequence[Any]] | None = None,
                        similarity: bool = True) -> int:
    """One row from start to end, each decoded cell labelled with its position t in [0, 1]
    (the interior points 1/(n+1) ... n/(n+1) of the path when both inputs are drawn).

    With the input molecules ``start`` / ``end`` (SMILES), they are drawn as the first / last
    cells, labelled "start (input)" / "end (input)" with their SMILES, and each decoded cell
    also shows its Tanimoto similarity (Tc, Morgan radius 2) to them unless ``similarity`` is
    False. ``properties`` ({name: values}) adds a line per cell: one value per decoded
    molecule, or one per drawn cell (inputs included, in drawing order).

    Returns the number of cells drawn.
    """
    from .chem import tanimoto_to

    n = len(smiles)
    cells: list[str | None] = list(smiles)
    # between two drawn inputs the decoded cells are the interior points of the path
    ts = ([(i + 1) / (n + 1) for i in range(n)] if start and end
          else [i / max(n - 1, 1) for i in range(n)])
    lines: list[list[str]] = [[f"t={t:.2f}"] for t in ts]
    limit = _chars(size[0])
    if similarity and (start or end) and n:
        sims = {name: tanimoto_to(ref, list(smiles)) for name, ref in (("start", start),
                                                                       ("end", end)) if ref}
        for i in range(n):
            lines[i].append("Tc " + "  ".join(f"{k} {v[i]:.2f}" if math.isfinite(v[i])
                                              else f"{k} -" for k, v in sims.items()))
    if start:
        cells.insert(0, start)
        lines.insert(0, ["start (input)", _shorten(start, limit)])
    if end:
        cells.append(end)
        lines.append(["end (input)", _shorten(end, limit)])
    if properties:
        offset = 1 if start else 0
        for name, values in properties.items():
            if len(values) not in (n, len(cells)):
                raise PictureError(f"property {name!r} has {len(values)} entries for {n} "
                                   f"decoded molecules ({len(cells)} cells)")
        for j, cell in enumerate(lines):
            parts = []
            for name, values in properties.items():
                if len(values) == len(cells):
                    parts.append(f"{name} {_number(values[j])}")
                elif offset <= j < offset + n:
                    parts.append(f"{name} {_number(values[j - offset])}")
            if parts:
                cell.append("  ".join(parts))
    framed = ([0] if start else []) + ([len(cells) - 1] if end else [])
    return _draw_cells(cells, lines, path, per_row=len(cells), size=size, framed=framed)


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
    import matplotlib
    kind = _kind(path)
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
    _kind(path)  # a bad suffix fails before any work
    z = np.asarray(z, dtype=float)
    v = np.asarray(values, dtype=float)
    if z.ndim != 2 or len(z) != len(v):
        raise PictureError(f"need an (N, D) array of latents and N values, got {z.shape} and "
                           f"{v.shape}")
    _check_length("names", names, len(z))
    keep = np.isfinite(z).all(1) & np.isfinite(v)
    x, vk = z[keep], v[keep]
    if len(x) < 3:
        raise PictureError("need at least 3 encoded molecules for a latent map")
    fig, (ax,) = _figure(1, width=5.5, height=4.5)
    if method == "tsne":
        xy, perp = _tsne(x, seed, perplexity)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
        how = f"t-SNE, perplexity {perp:.3g}"
    elif method == "pca":
        xy, explained = _principal_axes(x, 2)
        if xy.shape[1] < 2:
            xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
            explained = np.append(explained, 0.0)
        ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
        how = "PCA"
    else:
        xy, r2 = _property_axes(x, vk)
        ax.set_xlabel(f"latent direction of {label} (linear fit R\u00b2 {r2:.2f})")
        ax.set_ylabel("main remaining axis")
        how = "property direction"
    n = len(xy)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=vk, s=float(np.clip(4000 / n, 4, 60)),
                    cmap="viridis", alpha=0.85, linewidths=0)
    fig.colorbar(sc, ax=ax, label=label)
    if n <= LABEL_POINTS:
        ax.margins(x=0.1, y=0.08)
        middle = (xy[:, 0].min() + xy[:, 0].max()) / 2
        for (px, py), i in zip(xy, np.flatnonzero(keep)):
            text = _shorten(str(names[i]), 24) if names is not None else str(i)
            right = px <= middle  # labels point inwards, so none runs off the panel
            note = ax.annotate(text, (px, py), xytext=(4 if right else -4, 3), fontsize=7,
                               textcoords="offset points", ha="left" if right else "right")
            note.set_in_layout(False)
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
