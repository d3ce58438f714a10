"""``dvis.unit_card``: one unit as the atlas shows it, inline in a notebook cell.

The card holds the unit's optimized image, its top-9 dataset patches and their deconvnet (and
guided / gradient, when computed) projections, from the model's unit_vis images; its statistics
(mean, spread, how often it fires, selectivity, top classes, the units it correlates with, from the
maxes run's statistics); and links: to the unit's page in a built atlas (``atlas=``), and to the
units it correlates with. Images are embedded in the cell (data URIs): the card works offline and
in a saved notebook.
"""
from __future__ import annotations

import base64
import html
import os

import numpy as np

from dvis.atlas import KINDS, N_CORRELATED, layer_slug
from dvis.errors import DvisError, LayerNotFoundError
from dvis.formats.stats import find_stats
from dvis.formats.unit_vis import UnitImages
from dvis.imaging.encode import encode_image
from dvis.models.loaded import LoadedModel
from dvis.models.loading import load_model_layout

KIND_TITLES = {"opt": "optimized", "top9": "top 9 patches", "deconv": "deconvnet", "guided": "guided backprop",
               "grad": "gradient"}
STYLE = """<style>
.dvis-card { font: 13px sans-serif; border: 1px solid #ccc; border-radius: 4px; padding: 8px 12px; max-width: 980px; }
.dvis-card h3 { margin: 0 0 6px; font-size: 15px; }
.dvis-card .imgs { display: flex; gap: 12px; flex-wrap: wrap; }
.dvis-card figure { margin: 0; text-align: center; }
.dvis-card figure img { height: 160px; image-rendering: pixelated; }
.dvis-card figcaption { font-size: 11px; color: #666; }
.dvis-card table { border-collapse: collapse; margin: 6px 0 0; }
.dvis-card table tr { background: none !important; }  /* JupyterLab's tables: striped, right-aligned */
.dvis-card table td { padding: 1px 12px 1px 0; vertical-align: top; text-align: left !important; border: none; }
.dvis-card table td:first-child { white-space: nowrap; color: #666; }
.dvis-card .links a, .dvis-card .links span { margin-right: 8px; }
</style>"""


def _model(model) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model_layout(model)  # the card reads files only: no weights needed
    raise DvisError(f"unit_card: model is a name, a path or a LoadedModel, got {type(model).__name__} (an nn.Module "
                    "has no unit images; `dvis precompute` a model folder for it)")


def _data_uri(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_image(img, "png")).decode()


def _fmt(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.4g}"


class UnitCard:
    """One unit's card (see the module docstring): ``images`` (kind -> HxWx3 uint8), ``stats`` (name ->
    value) and ``correlated`` ((unit, r) pairs); shown as HTML in a notebook."""

    def __init__(self, model_name: str, layer: str, display: str, unit: int, n_units: int,
                 images: dict[str, np.ndarray], stats: dict, correlated: list[tuple[int, float]],
                 top: list[tuple[float, str]], atlas: str | None):
        self.model_name, self.layer, self.display, self.unit, self.n_units = model_name, layer, display, unit, n_units
        self.images, self.stats, self.correlated, self.top, self.atlas = images, stats, correlated, top, atlas

    def _link(self, unit: int, text: str) -> str:
        if self.atlas is None:
            return f"<span>{html.escape(text)}</span>"
        href = f"{self.atlas.rstrip('/')}/{layer_slug(self.layer)}/{unit}.html"
        return f'<a href="{html.escape(href)}" target="_blank">{html.escape(text)}</a>'

    def _repr_html_(self) -> str:
        figures = "".join(f'<figure><img src="{_data_uri(img)}" alt="{kind}"><figcaption>{KIND_TITLES.get(kind, kind)}'
                          f'</figcaption></figure>' for kind, img in self.images.items())
        if not figures:
            figures = "<p>No unit images for this layer: <code>dvis precompute</code> computes them.</p>"
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in self.stats.items())
        if self.top:
            rows += ("<tr><td>top images</td><td>" + ", ".join(f"{html.escape(name)} ({_fmt(v)})" for v, name in self.top)
                     + "</td></tr>")
        links = [self._link(self.unit, "atlas page")] if self.atlas else []
        if self.unit > 0:
            links.append(self._link(self.unit - 1, f"← {self.display}:{self.unit - 1}"))
        if self.unit + 1 < self.n_units:
            links.append(self._link(self.unit + 1, f"{self.display}:{self.unit + 1} →"))
        corr = " ".join(self._link(u, f"{self.display}:{u} (r={r:.2f})") for u, r in self.correlated)
        return (f'{STYLE}<div class="dvis-card"><h3>{html.escape(self.model_name)} / {html.escape(self.display)} '
                f'unit {self.unit}</h3><div class="imgs">{figures}</div><table>{rows}</table>'
                f'<div class="links">{" ".join(links)}</div>'
                + (f'<div class="links">correlated: {corr}</div>' if corr else "") + "</div>")

    def __repr__(self) -> str:
        return f"UnitCard({self.model_name} {self.display}:{self.unit}, images {', '.join(self.images) or 'none'})"


def unit_card(model, layer: str, unit: int, *, atlas: str | os.PathLike | None = None) -> UnitCard:
    """The atlas card of ``unit`` of ``layer`` (its name or display name) of ``model`` (a name or path
    as :func:`dvis.load_model` takes, or a LoadedModel): its images, statistics and links. ``atlas``:
    the folder or URL of the model's ``dvis atlas`` site, for links to its unit pages."""
    loaded = _model(model)
    names = {loaded.display_names.get(n, n): n for n in loaded.layers}
    layer = names.get(layer, layer)
    if layer not in loaded.layers:
        raise LayerNotFoundError(f"unit_card: no layer {layer!r} in {loaded.name}; layers: {', '.join(names)}")
    folders = loaded.unit_vis_dirs or ([loaded.unit_vis_dir] if loaded.unit_vis_dir else [])
    uv = UnitImages(*folders) if folders else None
    layout = uv.layout(layer) if uv is not None else {}
    n_units = max((e["units"] for e in layout.values() if isinstance(e, dict) and "units" in e), default=0)
    stats = find_stats(loaded)
    ls = stats.layer(layer) if stats is not None and layer in stats.shapes else None
    if ls is not None:
        n_units = len(ls.mean)
    if not n_units:
        raise DvisError(f"unit_card: {loaded.name} has no unit images or statistics for {layer}; run `dvis precompute`")
    if not 0 <= int(unit) < n_units:
        raise DvisError(f"unit_card: unit {unit} is outside {layer}'s 0-{n_units - 1}")
    unit = int(unit)
    images = {k: img for k in KINDS if uv is not None and (img := uv.load(layer, unit, k)) is not None}
    table: dict = {}
    correlated: list[tuple[int, float]] = []
    if ls is not None:
        flag = "dead (never positive)" if ls.dead[unit] else "rare" if ls.rare[unit] else "active"
        table = {"activity": flag, "mean": _fmt(ls.mean[unit]), "std": _fmt(ls.std[unit]),
                 "min / max": f"{_fmt(ls.min[unit])} / {_fmt(ls.max[unit])}",
                 "positive on": f"{ls.frac_images[unit]:.1%} of {ls.n} images, {ls.frac_positions[unit]:.1%} of positions"}
        if ls.selectivity is not None:
            table["class selectivity"] = _fmt(ls.selectivity[unit])
        classes = stats.classes
        tops = ls.top_classes(unit, 3)
        if tops:
            table["top-k classes"] = ", ".join(f"{classes[c] if c < len(classes) else c} {share:.0%}" for c, share in tops)
        correlated = ls.most_correlated(unit, N_CORRELATED)
    info = uv.info(layer, unit) if uv is not None else None
    top = list(zip(info.get("values", []), info.get("images", [])))[:9] if info else []
    display = loaded.display_names.get(layer, layer)
    return UnitCard(loaded.name, layer, display, unit, n_units, images, table, correlated, top,
                    os.fspath(atlas) if atlas is not None else None)
