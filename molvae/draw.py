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
