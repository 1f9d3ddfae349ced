"""Molecule pictures: grids and interpolation strips, PNG or SVG by suffix.

Molecules are drawn with RDKit's low-level drawer (no PIL, no cap on the count). SVG grids carry
a hover title per cell with the full SMILES and labels. Plots (histograms, latent maps, training
curves) are in :mod:`molvae.plots`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from rdkit import Chem
from rdkit.Chem.Draw import rdMolDraw2D
from rdkit.Geometry import Point2D

from .chem import mol_from_smiles

__all__ = ["molecule_grid", "interpolation_strip", "PictureError", "picture_kind"]

_LEGEND_FONT, _MIN_FONT = 14.0, 9.0  # legend font sizes, pixels
_LINE = 17  # pixels per legend line
_CHAR = 0.6  # a legend character's width per pixel of font size (a generous estimate)


class PictureError(ValueError):
    """A picture could not be written (bad suffix, nothing to draw, mismatched labels)."""


def picture_kind(path: str | Path) -> str:
    """'png' or 'svg', from the suffix of ``path``; a PictureError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise PictureError(f"{path}: picture files must end in .png or .svg")
    return suffix[1:]


def shorten(text: str, limit: int) -> str:
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


def check_length(what: str, values: Sequence[Any] | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise PictureError(f"{what} has {len(values)} entries for {n} molecules")


# ------------------------------------------------------------------------ molecule drawings
def _fit(drawer: Any, text: str, width: float) -> str:
    """Set a font size at which ``text`` fits ``width`` pixels (cutting it if even the
    smallest is too wide) and return the text to draw."""
    size = min(_LEGEND_FONT, width / (_CHAR * max(len(text), 1)))
    if size < _MIN_FONT:
        size = _MIN_FONT
        text = shorten(text, int(width / (_CHAR * size)))
    drawer.SetFontSize(size)
    return text


def _draw_cells(smiles: Sequence[str | None], lines: Sequence[Sequence[str]],
                path: str | Path, per_row: int, size: tuple[int, int],
                framed: Sequence[int] = ()) -> int:
    """Draw one molecule per cell with its legend lines below; invalid ones as marked cells.

    RDKit only reserves the legend space (its multi-line legends overlap): the lines are
    drawn here, each shrunk to fit the cell. Cells in ``framed`` get a blue frame.
    """
    kind = picture_kind(path)
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
    check_length("legends", legends, n)
    check_length("ids", ids, n)
    for name, values in (properties or {}).items():
        check_length(f"property {name!r}", values, n)
    limit = _chars(size[0])
    lines = []
    for i, s in enumerate(smiles):
        cell = [str(legends[i])] if legends is not None else []
        if ids is not None and ids[i] not in (None, ""):
            cell.append(shorten(str(ids[i]), limit))
        elif isinstance(s, str) and s.strip():
            cell.append(shorten(s.strip(), limit))
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
        lines.insert(0, ["start (input)", shorten(start, limit)])
    if end:
        cells.append(end)
        lines.append(["end (input)", shorten(end, limit)])
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
