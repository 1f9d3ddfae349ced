"""molvae.draw: labelled grids and strips, histogram ranges, seeded latent maps (CPU, fast)."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from molvae import plots
from molvae.draw import PictureError, _number, interpolation_strip, molecule_grid
from molvae.plots import _panel_range, latent_map, property_histograms

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LONG = "CN1CCC[C@H]1c1cccnc1CCCCCCCCCCCCCCCCCCCCC(=O)OCC"


def _png_size(path: Path) -> tuple[int, int]:
    blob = path.read_bytes()
    assert blob[:8] == PNG_MAGIC, blob[:16]
    assert blob[12:16] == b"IHDR"
    return struct.unpack(">II", blob[16:24])


def _svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg"), root.tag
    return root


def _titles(path: Path) -> list[str]:
    """The hover title of every grid cell, in drawing order."""
    root = _svg(path)
    cells = [el for el in root.iter() if el.get("class") == "molvae-cell"]
    return ["".join(el.itertext()) for el in cells]


def _text(path: Path) -> str:
    return " ".join(_svg(path).itertext())


# ------------------------------------------------------------------------------------ grids
def test_grid_cells_show_ids_and_properties(tmp_path):
    smiles = ["CCO", None, "c1ccccc1", "xyz", "CC(=O)Nc1ccc(O)cc1", "CCN", "OCCO"]
    ids = ["mol-1", "mol-2", None, "mol-4", "mol-5", "mol-6", "mol-7"]
    props = {"QED": [0.712, 0.5, float("nan"), 0.3, 0.59, None, 0.4],
             "SA": [2.31, 1.0, 1.2, 3.0, 1.5, 2.8, 10.44]}
    png = tmp_path / "grid.png"
    assert molecule_grid(smiles, png, per_row=3, size=(150, 120), properties=props,
                         ids=ids) == 7
    assert _png_size(png) == (3 * 150, 3 * 120)
    svg = tmp_path / "grid.svg"
    assert molecule_grid(smiles, svg, per_row=3, size=(150, 120), properties=props,
                         ids=ids) == 7
    root = _svg(svg)
    assert root.get("width", "").startswith("450") and root.get("height", "").startswith("360")
    titles = _titles(svg)
    assert len(titles) == 7
    assert titles[0].startswith("mol-1 | QED 0.71  SA 2.3 |") and "SMILES CCO" in titles[0]
    assert titles[2].startswith("c1ccccc1 | QED -  SA 1.2")  # no ID: the SMILES; NaN as "-"
    assert "QED -  SA 2.8" in titles[5] and "SA 10.4" in titles[6]
    assert "invalid" in titles[1] and "invalid" in titles[3]  # invalid cells stay marked
    assert all(t.startswith(i) for t, i in zip(titles, ids) if i)


def test_grid_without_labels_uses_smiles_and_shortens_them(tmp_path):
    svg = tmp_path / "grid.svg"
    assert molecule_grid(["CCO", LONG, None], svg, size=(200, 150)) == 3
    titles = _titles(svg)
    assert titles[0].startswith("CCO |")
    head = titles[1].split(" | ")[0]
    assert head.endswith("...") and len(head) < len(LONG) and LONG.startswith(head[:-3])
    assert f"SMILES {LONG}" in titles[1]  # the full SMILES in the cell's title
    assert titles[2].startswith("#2 |") and "no molecule" in titles[2]


def test_grid_legends_come_first(tmp_path):
    svg = tmp_path / "grid.svg"
    molecule_grid(["CCO", "CCN"], svg, legends=["#1 0.93", "#2 0.9"],
                  properties={"QED": [0.41, 0.42]})
    assert _titles(svg)[0].startswith("#1 0.93 | CCO | QED 0.41")


def test_grid_label_count_must_match(tmp_path):
    with pytest.raises(PictureError, match="ids"):
        molecule_grid(["CCO", "CCN"], tmp_path / "g.png", ids=["a"])
    with pytest.raises(PictureError, match="QED"):
        molecule_grid(["CCO", "CCN"], tmp_path / "g.png", properties={"QED": [0.1, 0.2, 0.3]})
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(("value", "text"), [(0.7123, "0.71"), (2.31, "2.3"), (-0.534, "-0.53"),
                                             (312.4, "312"), (float("nan"), "-"), (None, "-"),
                                             (3, "3"), (np.int64(12), "12"), ("", "-"),
                                             ("0.712", "0.71"), (" 4 ", "4"), ("nan", "-"),
                                             ("yes", "yes")])
def test_number_format(value, text):
    assert _number(value) == text


# ----------------------------------------------------------------------------------- strips
def test_strip_draws_the_inputs_first_and_last(tmp_path):
    steps = ["CCO", "CCCO", None, "c1ccccc1"]
    png = tmp_path / "strip.png"
    assert interpolation_strip(steps, png, start="OCC", end="c1ccccc1", size=(100, 90)) == 6
    assert _png_size(png) == (6 * 100, 90)
    svg = tmp_path / "strip.svg"
    props = {"QED": [0.41, 0.42, None, 0.44]}
    assert interpolation_strip(steps, svg, start="OCC", end="c1ccccc1", properties=props) == 6
    titles = _titles(svg)
    assert len(titles) == 6
    assert titles[0].startswith("start (input) | OCC |") and "SMILES OCC" in titles[0]
    assert titles[-1].startswith("end (input) | c1ccccc1 |")
    # between the inputs, the decoded cells are the path's interior points 1/5 ... 4/5
    assert titles[1].startswith("t=0.20 | Tc start 1.00  end 0.00 | QED 0.41")
    assert titles[3].startswith("t=0.60 | Tc start -  end - | QED -") and "invalid" in titles[3]
    assert titles[4].startswith("t=0.80 | Tc start 0.00  end 1.00 | QED 0.44")


def test_strip_without_inputs_is_the_decoded_path(tmp_path):
    svg = tmp_path / "strip.svg"
    assert interpolation_strip(["CCO", "CCN", "CCC"], svg) == 3
    assert [t.split(" | ")[0] for t in _titles(svg)] == ["t=0.00", "t=0.50", "t=1.00"]
    svg2 = tmp_path / "strip2.svg"
    interpolation_strip(["CCO", "CCN"], svg2, start="CCO", similarity=False)
    assert _titles(svg2)[1].startswith("t=0.00 | SMILES")  # no similarity line


def test_strip_properties_may_cover_the_inputs(tmp_path):
    svg = tmp_path / "strip.svg"
    interpolation_strip(["CCO", "CCN"], svg, start="CCO", end="CCN", similarity=False,
                        properties={"QED": [0.1, 0.2, 0.3, 0.4]})
    assert [t.split(" | ")[-2] for t in _titles(svg)] == ["QED 0.10", "QED 0.20", "QED 0.30",
                                                          "QED 0.40"]
    with pytest.raises(PictureError, match="QED"):
        interpolation_strip(["CCO", "CCN"], svg, start="CCO", properties={"QED": [0.1]})


# ------------------------------------------------------------------------------- histograms
def test_histogram_range_covers_samples_far_beyond_the_reference(tmp_path):
    rng = np.random.default_rng(0)
    reference = {"SA": rng.normal(3.0, 0.5, 5000)}
    samples = {"SA": np.concatenate([rng.normal(4.5, 1.0, 400), [8.0, float("nan")]])}
    lo, hi = _panel_range(samples["SA"], reference["SA"])
    assert lo <= np.percentile(reference["SA"], 0.5) and hi >= 8.0
    svg = tmp_path / "h.svg"
    ranges = property_histograms(samples, reference, svg)
    assert ranges == {"SA": (lo, hi)}
    assert "outside" not in _text(svg)
    png = tmp_path / "h.png"
    property_histograms(samples, reference, png)
    _png_size(png)


def test_histogram_states_clipped_outliers(tmp_path):
    rng = np.random.default_rng(1)
    samples = {"MW": np.concatenate([rng.normal(300, 40, 1000), [1e6]])}
    reference = {"MW": rng.normal(320, 40, 2000)}
    lo, hi = _panel_range(samples["MW"], reference["MW"])
    assert hi < 1e6 and hi >= np.sort(samples["MW"])[-2]  # the outlier would squash the panel
    svg = tmp_path / "h.svg"
    property_histograms(samples, reference, svg, labels=("samples", "test"))
    assert "1 of 1,001 samples outside the range" in _text(svg)


def test_panel_range_of_degenerate_data():
    assert _panel_range([], []) == (0.0, 1.0)
    assert _panel_range([2.0, 2.0], [float("nan")]) == (1.5, 2.5)
    lo, hi = _panel_range([], [1.0, 2.0, 3.0])
    assert lo <= 1.0 + 0.02 and hi >= 3.0 - 0.02


# ------------------------------------------------------------------------------ latent maps
def _latents(n: int, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    z = rng.normal(0, 3, (3, dim))[group] + rng.normal(size=(n, dim))
    return z, group + rng.normal(0, 0.1, n)


def test_latent_map_tsne_is_seeded(tmp_path):
    z, v = _latents(45)
    z[3] = np.nan  # an input that could not be encoded
    v[5] = np.nan
    png = tmp_path / "map.png"
    xy = latent_map(z, v, png, label="QED")
    _png_size(png)
    assert xy.shape == (45, 2)
    assert np.isnan(xy[[3, 5]]).all() and np.isfinite(np.delete(xy, [3, 5], 0)).all()
    again = latent_map(z, v, tmp_path / "again.svg", label="QED", method="tsne")
    np.testing.assert_array_equal(xy, again)
    assert "t-SNE 1" in _text(tmp_path / "again.svg")


def test_latent_map_names_few_points(tmp_path):
    z, v = _latents(12)
    names = [f"mol<{i}>" for i in range(12)]
    svg = tmp_path / "few.svg"
    latent_map(z, v, svg, label="logP", names=names)
    text = _text(svg)
    assert all(name in text for name in names) and "logP" in text
    svg = tmp_path / "indices.svg"
    latent_map(z, v, svg, method="pca")
    assert {str(i) for i in range(12)} <= set(_text(svg).split())
    z, v = _latents(plots.LABEL_POINTS + 1)
    svg = tmp_path / "many.svg"
    latent_map(z, v, svg, method="pca", names=[f"name{i}" for i in range(len(z))])
    assert "name7" not in _text(svg)  # too many points to name


def test_latent_map_pca_keeps_the_principal_axes(tmp_path):
    z, v = _latents(60)
    svg = tmp_path / "pca.svg"
    xy = latent_map(z, v, svg, method="pca")
    zc = z - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    np.testing.assert_allclose(np.abs(xy), np.abs(zc @ vt[:2].T), atol=1e-9)
    text = _text(svg)
    assert "PC1 (" in text and "of variance" in text


def test_latent_map_property_axis_follows_the_values(tmp_path):
    z, v = _latents(80, dim=6)
    xy = latent_map(z, v, tmp_path / "prop.png", method="property")
    assert abs(np.corrcoef(xy[:, 0], v)[0, 1]) > 0.9


def test_latent_map_reduces_many_points_before_tsne(tmp_path, monkeypatch):
    from sklearn.manifold import TSNE
    seen = []
    original = TSNE.fit_transform

    def spy(self, x, *args, **kwargs):
        seen.append(x.shape)
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(TSNE, "fit_transform", spy)
    monkeypatch.setattr(plots, "TSNE_PCA_ABOVE", 30)
    z, v = _latents(60, dim=64)
    latent_map(z, v, tmp_path / "big.png")
    latent_map(z[:30], v[:30], tmp_path / "small.png")
    assert seen == [(60, 50), (30, 64)]


def test_latent_map_errors(tmp_path):
    z, v = _latents(10)
    with pytest.raises(PictureError, match="method"):
        latent_map(z, v, tmp_path / "m.png", method="umap")
    with pytest.raises(PictureError, match="png or .svg"):
        latent_map(z, v, tmp_path / "m.jpg")
    with pytest.raises(PictureError, match="names"):
        latent_map(z, v, tmp_path / "m.png", names=["a"])
    with pytest.raises(PictureError):
        latent_map(z, v[:5], tmp_path / "m.png")
    with pytest.raises(PictureError, match="at least 3"):
        latent_map(z[:2], v[:2], tmp_path / "m.png")
    assert not list(tmp_path.iterdir())
