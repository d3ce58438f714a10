"""``dvis atlas``: a static site of a model's units, from its unit_vis images and unit statistics.

The site works from ``file://`` and any static host, offline (no server, no CDN)::

    DIR/index.html            layers (unit, dead and rare counts, mean selectivity) and a search box
    DIR/<layer>/index.html    every unit's optimized image (CSS positions into the copied sprite)
    DIR/<layer>/<unit>.html   one unit: images, statistics, histogram, classes, correlated units
    DIR/<layer>/data.js       the layer's per-unit data (script, since file:// pages cannot fetch JSON)
    DIR/site.js               model, layers, classes and the search index
    DIR/atlas.js, atlas.css   the page code and style (templates in dvis/atlas/templates)
    DIR/img/<layer>/*.jpg     the unit_vis sprites, copied once, and bottom.jpg: each unit's bottom-k
                              (least-activating) images, when the statistics kept them and the
                              maxes run's images can still be read
    DIR/atlas.json            marks the folder as an atlas (rebuilt without --force)

Unit pages are small shells that ``atlas.js`` fills from ``data.js``, so the HTML and JSON add
little to the images. URLs are stable: ``<layer>/<unit>.html``.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dvis.errors import DvisError
from dvis.formats.atomic import atomic_write_text, read_format_json

FORMAT = "dvis-atlas"
VERSION = 1
#: The file that marks a folder as an atlas (written last, atomically).
HEADER = "atlas.json"
TEMPLATES = Path(__file__).parent / "templates"
#: Unit image kinds shown on unit pages, in order (whatever exists): every optimization method's
#: image side by side, then the dataset's.
KINDS = ("opt", "opt_fourier", "opt_maco", "opt_accentuate", "top9", "deconv", "guided", "grad")
N_CORRELATED = 8
#: Side of the bottom-k thumbnails (px; smaller images keep their size).
BOTTOM_TILE = 64


@dataclass
class AtlasReport:
    out: Path
    seconds: float
    pages: int
    text_bytes: int   # HTML, JS, CSS and JSON written
    image_bytes: int  # sprites copied


def layer_slug(layer: str) -> str:
    """The layer's folder name in the site (its name, with characters unsafe in URLs replaced)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer)


def _num(values, digits: int = 4) -> list:
    """JSON numbers with ``digits`` significant digits (None for NaN/inf): small files."""
    return [None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in np.asarray(values, np.float64).ravel()]


def _js(name: str, data) -> str:
    return f"{name}({json.dumps(data, separators=(',', ':'))});\n"


def layer_data(layer: str, display: str, shape: tuple[int, ...], images: dict, stats, classes: list[str]) -> dict:
    """Everything a layer's unit pages show, as JSON-ready lists (one entry per unit)."""
    n = shape[0]
    data = {"name": layer, "slug": layer_slug(layer), "display": display, "shape": list(shape), "units": n,
            "images": images, "stats": None}
    if stats is None:
        return data
    s = stats
    flags = np.where(s.dead, "d", np.where(s.rare, "r", "."))
    hist = []
    for row in s.hist:  # JSON assembly only; the statistics were computed batched
        used = np.nonzero(row)[0]
        hist.append([int(used[0]), row[used[0]:used[-1] + 1].tolist()] if len(used) else [0, []])
    out = {"n": s.n, "mean": _num(s.mean), "std": _num(s.std), "min": _num(s.min), "max": _num(s.max),
           "fimg": _num(s.frac_images), "fpos": _num(s.frac_positions), "flag": "".join(flags), "hist": hist,
           "corr": [[[u, float(f"{r:.3f}")] for u, r in s.most_correlated(u, N_CORRELATED)] for u in range(n)]}
    if s.selectivity is not None:
        out["sel"] = _num(s.selectivity, 3)
        order = np.argsort(-s.class_mean, axis=1, kind="stable")[:, :5]
        out["cmean"] = [[[int(c), v] for c, v in zip(order[u], _num(s.class_mean[u, order[u]], 3))] for u in range(n)]
    if s.topk_classes is not None:
        out["top"] = [[[c, float(f"{share:.3f}")] for c, share in s.top_classes(u, 5)] for u in range(n)]
    data["stats"] = out
    return data


def bottom_data(ls, names: list[str]) -> dict | None:
    """Each unit's bottom-k images as (image, score) pairs, lowest first, with the image names they
    index (only those used): what a unit page lists under its least-activating images."""
    if ls.bottom_index is None or names is None:
        return None
    used = sorted({int(i) for i in np.unique(ls.bottom_index) if 0 <= i < len(names)})
    at = {i: j for j, i in enumerate(used)}
    rows = [[[at[int(i)], v] for i, v in zip(idx, _num(vals)) if int(i) in at]
            for idx, vals in zip(ls.bottom_index, ls.bottom_values)]
    return {"names": [names[i] for i in used], "units": rows}


def bottom_sprite(ls, source, tile: int = BOTTOM_TILE) -> np.ndarray | None:
    """units*tile x k*tile RGB: unit u's bottom-k images (whole, fitted into ``tile``) in row u, lowest
    first; None when an image cannot be read (the source moved or is not shipped)."""
    import cv2

    units, k = ls.bottom_index.shape
    out = np.zeros((units * tile, k * tile, 3), np.uint8)
    cache: dict[int, np.ndarray] = {}
    for u in range(units):
        for j, i in enumerate(ls.bottom_index[u]):
            i = int(i)
            if i not in cache:
                try:
                    img = source.load(i)
                except (DvisError, OSError, IndexError):
                    return None
                scale = tile / max(img.shape[:2])
                h, w = max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))
                cache[i] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            img = cache[i]
            out[u * tile:u * tile + img.shape[0], j * tile:j * tile + img.shape[1]] = img
    return out


def _maxes_images(stats):
    """(image names, readable source or None) of the maxes run the statistics came from."""
    from dvis.imaging.datasets import open_source

    root = Path(stats.root)
    try:
        names = (root / "images.txt").read_text().splitlines()
    except OSError:
        return None, None
    try:
        spec = json.loads((root / "manifest.json").read_text()).get("source")
        source = open_source(spec) if spec else None
    except (OSError, ValueError, DvisError):
        source = None
    if source is not None and list(source.names) != names:
        source = None  # the folder changed since the run: its indices no longer name these images
    return names, source


def _page(title: str, body: str, depth: int, scripts: list[str], body_attrs: str = "") -> str:
    up = "../" * depth
    tags = "".join(f'<script src="{html.escape(s)}"></script>' for s in scripts)
    return (f'<!doctype html><html lang="en"><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f'<title>{html.escape(title)}</title><link rel="stylesheet" href="{up}atlas.css">'
            f'<body{body_attrs}>{body}{tags}</body></html>\n')


def build_atlas(model, out: str | Path, force: bool = False) -> AtlasReport:
    """Write the atlas of a LoadedModel into ``out``; returns what was written."""
    from dvis.formats.stats import EDGES, find_stats
    from dvis.formats.unit_vis import MANIFEST, UnitImages

    t0 = time.perf_counter()
    out = Path(out)
    if model.unit_vis_dir is None or not (Path(model.unit_vis_dir) / MANIFEST).is_file():
        raise DvisError(f"model {model.name} has no unit images; run `dvis precompute` first")
    if out.exists() and any(out.iterdir()) and not (out / HEADER).is_file() and not force:
        raise DvisError(f"{out} exists and is not an atlas; choose another --out or pass --force")
    uv = UnitImages(model.unit_vis_dir)
    try:
        stats = find_stats(model)
    except DvisError as exc:
        print(f"atlas: {exc}; pages are built without statistics")
        stats = None
    present = set(uv.layers())
    layers = [n for n in model.layers if n in present]
    if not layers:
        raise DvisError(f"model {model.name} has unit images for none of its layers; run `dvis precompute`")
    classes = list(stats.classes) if stats is not None else []
    run_names, run_source = _maxes_images(stats) if stats is not None else (None, None)
    if (out / HEADER).is_file():  # a previous atlas: drop its pages so none go stale
        try:
            old = read_format_json(out / HEADER, FORMAT, VERSION, "").get("layers", [])
        except DvisError:
            if not force:
                raise
            old = []  # not an atlas header: --force writes over the folder as for any other
        for folder in [out / "img"] + [out / layer_slug(n) for n in old]:
            shutil.rmtree(folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("atlas.js", "atlas.css"):
        shutil.copyfile(TEMPLATES / name, out / name)

    text_files: list[Path] = [out / "atlas.js", out / "atlas.css"]
    image_bytes, pages, site_layers, index = 0, 0, [], []
    for li, layer in enumerate(layers):
        slug = layer_slug(layer)
        folder = out / slug
        (out / "img" / slug).mkdir(parents=True, exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        lay = uv.layout(layer)
        images = {}
        for kind in KINDS:
            entry = lay.get(kind)
            src = Path(model.unit_vis_dir) / layer / entry["file"] if entry else None
            if src is None or not src.is_file():
                continue
            dst = out / "img" / slug / entry["file"]
            shutil.copyfile(src, dst)
            image_bytes += dst.stat().st_size
            images[kind] = {"src": f"../img/{slug}/{entry['file']}", "tile": entry["tile"], "cols": entry["cols"],
                            "present": "".join("1" if p else "0" for p in entry["present"])}
        n = max((e["units"] for e in lay.values() if isinstance(e, dict) and "units" in e), default=0)
        shape = (n,)
        ls = None
        if stats is not None and layer in stats.shapes:
            ls = stats.layer(layer)
            shape = stats.shapes[layer]
            n = shape[0]
        display = model.display_names.get(layer, layer)
        data = layer_data(layer, display, shape, images, ls, classes)
        bottom = bottom_data(ls, run_names) if ls is not None else None
        if bottom is not None:
            data["bottom"] = bottom
            sprite = bottom_sprite(ls, run_source) if run_source is not None else None
            if sprite is not None:
                from dvis.imaging.encode import encode_image

                dst = out / "img" / slug / "bottom.jpg"
                dst.write_bytes(encode_image(sprite, "jpeg", quality=85))
                image_bytes += dst.stat().st_size
                data["bottom"]["sprite"] = {"src": f"../img/{slug}/bottom.jpg", "tile": [BOTTOM_TILE, BOTTOM_TILE],
                                            "cols": ls.bottom_index.shape[1]}
        (folder / "data.js").write_text(_js("atlas.addLayer", data))
        text_files.append(folder / "data.js")
        summary = {"name": layer, "slug": slug, "display": display, "units": n, "shape": list(shape),
                   "dead": int(ls.dead.sum()) if ls is not None else None,
                   "rare": int(ls.rare.sum()) if ls is not None else None,
                   "sel": (_num([np.nanmean(ls.selectivity)], 3)[0] if ls is not None and ls.selectivity is not None
                           and np.isfinite(ls.selectivity).any() else None)}
        site_layers.append(summary)
        if ls is not None and ls.topk_classes is not None:
            for u in range(n):
                top = ls.top_classes(u, 1)
                if top:
                    sel = ls.selectivity[u]
                    index.append([li, u, top[0][0], float(f"{top[0][1]:.3f}"),
                                  None if not np.isfinite(sel) else float(f"{sel:.3f}")])
        # The layer's grid: every unit's optimized image (else its top-9) from the sprite by CSS position.
        kind = "opt" if "opt" in images else ("top9" if "top9" in images else None)
        if kind:  # the thumbnail of its units in the index's search results
            summary["thumb"] = {**images[kind], "src": images[kind]["src"][len("../"):]}
        cells = []
        flags = data["stats"]["flag"] if data["stats"] else "." * n
        if kind:
            (th, tw), cols = images[kind]["tile"], images[kind]["cols"]
            scale = 64 / max(th, tw)
            w, h = round(tw * scale), round(th * scale)
            sw = round(cols * tw * scale)
            cells_css = (f".g a.t{{width:{w}px;height:{h}px;background:url({images[kind]['src']}) "
                         f"0 0/{sw}px auto no-repeat}}")
        else:
            cells_css = ".g a.t{width:64px;height:64px}"
            w = h = 64
        for u in range(n):
            pos = ""
            if kind:
                r, c = divmod(u, cols)
                pos = f' style="background-position:-{c * w}px -{r * h}px"'
            cls = {"d": " dead", "r": " rare"}.get(flags[u] if u < len(flags) else ".", "")
            cells.append(f'<a class="t{cls}" href="{u}.html" title="{html.escape(display)}:{u}"{pos}>'
                         f'<span>{u}</span></a>')
        nav = ['<a href="../index.html">index</a>']
        if li > 0:
            nav.append(f'<a href="../{layer_slug(layers[li - 1])}/index.html">&larr; '
                       f'{html.escape(model.display_names.get(layers[li - 1], layers[li - 1]))}</a>')
        if li + 1 < len(layers):
            nav.append(f'<a href="../{layer_slug(layers[li + 1])}/index.html">'
                       f'{html.escape(model.display_names.get(layers[li + 1], layers[li + 1]))} &rarr;</a>')
        counts = (f"{n} units" + (f", {summary['dead']} dead, {summary['rare']} rare" if ls is not None else "")
                  + (f", mean selectivity {summary['sel']}" if summary["sel"] is not None else ""))
        body = (f'<style>{cells_css}</style><nav>{" ".join(nav)}</nav>'
                f'<h1>{html.escape(model.name)} / {html.escape(display)}</h1><p>{counts}. '
                f'{"Optimized images" if kind == "opt" else "Top-9 mosaics"}; red: dead, orange: rare.</p>'
                f'<div class="g">{"".join(cells)}</div>')
        (folder / "index.html").write_text(_page(f"{model.name} {display}", body, 1, []))
        text_files.append(folder / "index.html")
        pages += 1
        for u in range(n):  # tiny shells: atlas.js draws the unit from data.js
            p = folder / f"{u}.html"
            p.write_text(_page(f"{display}:{u}", '<main id="unit">loading&hellip;</main>', 1,
                               ["../site.js", "data.js", "../atlas.js"], f' data-layer="{html.escape(layer)}" data-unit="{u}"'))
            text_files.append(p)
        pages += n

    site = {"model": model.name, "layers": site_layers, "classes": classes, "index": index,
            "hist_edges": EDGES.tolist(),
            "stats": stats is not None, "n_images": stats.meta["n_images"] if stats is not None else None}
    (out / "site.js").write_text("var atlas={layers:{},addLayer:function(d){this.layers[d.name]=d;}};\n"
                                 f"atlas.site={json.dumps(site, separators=(',', ':'))};\n")
    text_files.append(out / "site.js")
    rows = "".join(
        f'<tr><td><a href="{s["slug"]}/index.html">{html.escape(s["display"])}</a></td><td>{"x".join(map(str, s["shape"]))}'
        f'</td><td>{s["units"]}</td><td>{"" if s["dead"] is None else s["dead"]}</td>'
        f'<td>{"" if s["rare"] is None else s["rare"]}</td><td>{"" if s["sel"] is None else s["sel"]}</td></tr>'
        for s in site_layers)
    note = "" if stats is not None else "<p>No unit statistics: `dvis maxes` (or `dvis precompute`) computes them.</p>"
    body = (f'<h1>{html.escape(model.name)} unit atlas</h1>{note}'
            '<form id="search" onsubmit="return false"><input id="q" type="search" autocomplete="off" '
            'placeholder="class (e.g. cat) or layer:unit (e.g. conv3:17)"></form><ol id="results"></ol>'
            '<table><tr><th>layer</th><th>shape</th><th>units</th><th>dead</th><th>rare</th><th>mean selectivity</th>'
            f'</tr>{rows}</table><p class="small">Made by <code>dvis atlas</code>. Dead: never positive; rare: positive '
            'on fewer than 0.1% of images; selectivity: Morcos et al. (2018) class-selectivity index.</p>')
    (out / "index.html").write_text(_page(f"{model.name} unit atlas", body, 0, ["site.js", "atlas.js"],
                                          ' data-page="index"'))
    atomic_write_text(out / HEADER, json.dumps({"format": FORMAT, "version": VERSION, "model": model.name,
                                                "layers": layers}))
    text_files += [out / "index.html", out / HEADER]
    pages += 1
    text_bytes = sum(p.stat().st_size for p in text_files)
    return AtlasReport(out, time.perf_counter() - t0, pages, text_bytes, image_bytes)
