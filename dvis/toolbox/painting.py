"""The drawing half of the toolbox: every pane from the view state, the worker's output and the loaded
unit images into the one RGB canvas, and what each render changed (:attr:`Painting.damage`).

:class:`Painting` is a base of :class:`dvis.toolbox.app.Toolbox`: it reads the state, the worker, the
loader and the layer tables the core keeps, and writes only the canvas and its drawing caches.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dvis.formats.unit_vis import opt_kinds
from dvis.imaging.encode import encode_image
from dvis.toolbox import render as R
from dvis.toolbox import stats_panes as SP
from dvis.toolbox.control_pane import render_control
from dvis.toolbox.settings import Settings
from dvis.toolbox.render import NotThere
from dvis.toolbox.workers import SpriteKey, UnitImageKey


def style_from(settings: Settings) -> R.Style:
    """Renderer style (colours, text size) from the settings."""
    return R.Style(text=settings.color_text, background=settings.color_background,
                   disabled=settings.color_disabled, stale=settings.color_stale,
                   selected=settings.color_selected, frozen=settings.color_frozen,
                   rf_box=settings.color_rf_box, positive=settings.color_positive,
                   negative=settings.color_negative,
                   font_size=0.45 * settings.global_scale * settings.font_scale)


class Painting:
    """Rendering for :class:`~dvis.toolbox.app.Toolbox` (see the module docstring). The core sets up
    ``canvas``, ``panes``, ``style``, ``_pane_cache``, ``damage``, ``renders``, ``_layers_drawn`` and
    ``_help_drawn``."""

    def _names(self) -> list[str]:
        return [self.model.display_names.get(layer, layer) for layer in self.model.layers]

    def _pane(self, name: str) -> np.ndarray:
        t, l, h, w = self.panes[name]
        return self.canvas[t:t + h, l:l + w]

    def _cached(self, name: str, key: tuple, source, make) -> np.ndarray:
        """``make()``, reused while ``key`` and the ``source`` object (compared by identity) are the same."""
        hit = self._pane_cache.get(name)
        if hit is None or hit[0] != key or hit[1] is not source:
            hit = (key, source, make())
            self._pane_cache[name] = hit
        return hit[2]

    def render(self) -> np.ndarray:
        """Draw every pane into the canvas (RGB) and return it."""
        st, s, out = self.state, self.settings, self.worker.output
        layers_before, self._layers_drawn = self._layers_drawn, None
        if out is not None and out.error:
            self.message = f"worker: {out.error}"
        layer = self.model.layers[st.layer]
        acts = out.acts.get(layer) if out is not None else None
        bi, bg = s.boost_indiv_choices[st.boost_indiv], s.boost_gamma_choices[st.boost_gamma]
        diffs = out.diffs.get(layer) if (out is not None and st.show_diffs and st.back_on) else None
        signed = diffs is not None
        tiles = None
        if acts is not None:
            data = diffs if signed else acts
            tiles = self._cached("tiles", (layer, signed, bi, bg), out,
                                 lambda: R.layer_images(data, bi, bg, signed, self.style))
        back_img = self._back_image(out)
        self._render_layers(tiles, back_img)
        self._render_input(out, acts)
        self._render_aux(out, tiles, acts)
        stale = self.worker.busy and (out is None or out.job.back != self.job().back)
        caption = self._back_caption() if back_img is not None else \
            (self._waiting() if st.back_on else "back-projection off (b)")
        R.render_back(self._pane("back"), self.style, back_img, caption, stale=stale,
                      zero=back_img is not None and not np.any(out.grad))
        render_control(self._pane("control"), self._names(), st.layer, self.style,
                         frozen=st.frozen[0] if st.frozen else None, on_list=st.on_layer_list,
                         disabled=self.disabled)
        self._render_unit_images()
        R.render_status(self._pane("status"), self.status_text(), self.style)
        if st.show_help:
            R.render_help(self.canvas, self.help_rows, self.style)
        self.renders += 1
        self.damage = self._damage(layers_before, st.show_help)
        return self.canvas

    def _damage(self, layers_before, help_now: bool) -> list[tuple[int, int, int, int]]:
        """:attr:`damage` of the render just done, given what the layers pane was drawn from before."""
        help_before, self._help_drawn = self._help_drawn, help_now
        if help_now or help_before or self.renders == 1:  # the help overlay draws over everything
            return [(0, 0, *self.canvas.shape[:2])]
        rects = [p for name, p in self.panes.items() if name != "layers"]
        now, (top, left) = self._layers_drawn, self.panes["layers"][:2]
        if now is not None and layers_before is not None and now[0] is layers_before[0]:
            # The same grid copied in again: only the old and the new outlines can differ.
            rects += [(top + t, left + l, h, w) for t, l, h, w in layers_before[1] + now[1]]
        else:
            rects.append(self.panes["layers"])
        return rects

    def _waiting(self) -> str:
        """What a pane without results says: 'computing', or why there is nothing to compute."""
        if self.frame is not None or self.state.camera:
            return "computing"
        return f"no images: {self.message or self.files.message or 'no readable image'}"

    def _back_image(self, out) -> np.ndarray | None:
        if not self.state.back_on or out is None or out.grad is None:
            return None
        from dvis.render.backfilter import back_filter

        filt = self.state.back_filter
        return self._cached("back", (filt,), out, lambda: back_filter(out.grad, filt))

    def _back_caption(self) -> str:
        st = self.state
        layer, unit = st.back_source()
        frozen = " frozen" if st.frozen else ""
        return f"{st.back_mode} {st.back_filter}: {self._names()[layer]}:{unit}{frozen}"

    def _render_layers(self, tiles: np.ndarray | None, back_img: np.ndarray | None) -> None:
        st, pane = self.state, self._pane("layers")
        if st.layer in self.disabled:
            R.fill(pane, self.style.disabled, f"{self._names()[st.layer]}: {self.why_disabled(st.layer)}", self.style)
            return
        if st.zoom == "back":
            R.render_back(pane, self.style, back_img, self._back_caption() if back_img is not None else
                          "zoom: back-projection off (b)",
                          zero=back_img is not None and not np.any(self.worker.output.grad))
            return
        if st.stats_view != "off":
            self._render_stats_tiles(pane)
            return
        if tiles is None:
            R.fill(pane, self.style.stale, self._waiting(), self.style)
            return
        if st.zoom == "unit":
            R.paint(pane, self.style.background)
            image, note = self._unit_zoom(tiles)
            R.blit_fit(pane, image)
            R.draw_caption(pane, f"zoom {self._names()[st.layer]}:{st.unit} {note}", self.style)
            return
        images = tiles
        if st.pattern:
            sprite = self.loader.get(SpriteKey(self.model.layers[st.layer], self._opt_kinds()[0]))
            if isinstance(sprite, NotThere):
                R.fill(pane, self.style.stale if sprite is NotThere.LOADING else self.style.disabled,
                       f"patterns {sprite.value}", self.style)
                return
            images = sprite
        layout = self.tile_layouts[st.layer]
        frozen = st.frozen[1] if st.frozen and st.frozen[0] == st.layer else None
        grid = self._cached("layers", (st.layer,), images, lambda: self._draw_tiles(images, layout))
        np.copyto(pane, grid)
        self._layers_drawn = (grid, R.render_outlines(pane, layout, len(images), self.style, st.unit, frozen))

    def _layer_stats(self):
        layer = self.model.layers[self.state.layer]
        return self.unit_stats.layer(layer) if self.unit_stats is not None and layer in self.unit_stats.shapes else None

    def _render_stats_tiles(self, pane: np.ndarray) -> None:
        """Histogram or correlation mode: one statistics image per tile (dvis.toolbox.stats_panes)."""
        st, layer, ls = self.state, self.model.layers[self.state.layer], self._layer_stats()
        if ls is None:
            R.fill(pane, self.style.disabled, f"{st.stats_view}: {self.stats_message or 'no statistics for ' + layer}",
                   self.style)
            return
        if st.stats_view == "hist":
            images = self._cached("stats_tiles", (layer, "hist"), ls, lambda: SP.hist_tiles(ls, self.style))
        else:
            images = self._cached("stats_tiles", (layer, "corr", st.unit), ls,
                                  lambda: SP.corr_tiles(ls.corr_with(st.unit), st.unit, len(ls.mean), self.style))
        layout = self.tile_layouts[st.layer]
        grid = self._cached("layers", (st.layer, st.stats_view), images, lambda: self._draw_tiles(images, layout))
        np.copyto(pane, grid)
        self._layers_drawn = (grid, R.render_outlines(pane, layout, len(images), self.style, st.unit, None))

    def _draw_tiles(self, images: np.ndarray, layout: R.TileLayout) -> np.ndarray:
        pane = np.empty(self._pane("layers").shape, np.uint8)
        R.render_tiles(pane, images, layout, self.style)
        return pane

    def why_disabled(self, index: int) -> str:
        """Why layer ``index`` has nothing to show (it does not run in eval mode, or has no unit layout)."""
        geom = self.layer_geometry[self.model.layers[index]]
        if geom is None:
            return "not found in the traced forward"
        return geom.reason or ("does not run in eval mode" if not geom.runs else f"{geom.layout} output")

    def _render_input(self, out, acts: np.ndarray | None) -> None:
        st = self.state
        top5 = R.top_k(out.probs, self.model.labels) if (st.show_top5 and out is not None and
                                                          out.probs is not None) else None
        overlay = None
        if st.occlusion and out is not None and out.occlusion is not None:
            heat = cv2.applyColorMap(R.to_u8(out.occlusion), cv2.COLORMAP_JET)
            overlay = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
        msg = "occlusion: computing" if st.occlusion and overlay is None else None
        if self.frame is None:
            msg = self.message or "no frame"
        R.render_input(self._pane("input"), self.frame, self.style, self.rf_box(acts), self.model.input_size,
                       top5, overlay, msg, self.rf_peak(acts))

    def rf_box(self, acts: np.ndarray | None) -> tuple[int, int, int, int] | None:
        """Receptive field (input pixels) of the selected unit at its max position, for conv maps."""
        rf = self.rfs.get(self.model.layers[self.state.layer])
        if not self.settings.input_overlay_rf or rf is None or acts is None or acts.ndim != 3:
            return None
        y, x = np.unravel_index(int(np.argmax(acts[self.state.unit])), acts.shape[1:])
        return rf.box(int(y), int(x))

    def rf_peak(self, acts: np.ndarray | None) -> tuple[float, float] | None:
        """Where on the input (pixels) the selected unit peaks, for maps and token grids."""
        rf = self.rfs.get(self.model.layers[self.state.layer])
        if not self.settings.input_overlay_rf or rf is None or acts is None or acts.ndim != 3 or acts.shape[1:] == (1, 1):
            return None  # a 1x1 map has no place to peak at
        y, x = np.unravel_index(int(np.argmax(acts[self.state.unit])), acts.shape[1:])
        return R.peak_point(rf.box(int(y), int(x), clip=False), rf.stride, rf.window, (int(y), int(x)))

    def _render_aux(self, out, tiles: np.ndarray | None, acts: np.ndarray | None) -> None:
        st, pane = self.state, self._pane("aux")
        if st.on_layer_list:
            if out is not None and out.probs is not None:
                R.render_aux(pane, self.style, top5=R.top_k(out.probs, self.model.labels))
            else:
                R.render_aux(pane, self.style, caption="no class scores")
            return
        if tiles is None or acts is None:
            R.render_aux(pane, self.style, caption=self._waiting())
            return
        value = float(acts[st.unit].max())
        image, note = self._unit_zoom(tiles)
        caption = f"{self._names()[st.layer]}:{st.unit} max {value:.3g}"
        extra = out.extra.get(self.model.layers[st.layer]) if out is not None else None
        if extra is not None:  # class / register tokens are shown apart from the patch grid
            caption += " | tokens " + " ".join(f"{v:.3g}" for v in extra[:, st.unit])
        R.render_aux(pane, self.style, image, caption=f"{caption} | {note}")
        classes = self.unit_stats.classes if self.unit_stats is not None else []
        SP.render_lines(pane, SP.unit_lines(self._layer_stats(), st.unit, classes), self.style)

    def _unit_zoom(self, tiles: np.ndarray) -> tuple[np.ndarray, str]:
        """The selected unit's map scaled by its own range (acts, or back diffs when the tiles show them);
        a single value keeps its tile from ``tiles``."""
        st, s, out = self.state, self.settings, self.worker.output
        layer = self.model.layers[st.layer]
        diffs = out.diffs.get(layer) if (st.show_diffs and st.back_on) else None
        data = diffs if diffs is not None else out.acts[layer]
        return R.unit_zoom(data[st.unit], s.boost_gamma_choices[st.boost_gamma], diffs is not None, self.style,
                           tiles[st.unit])

    def _opt_kinds(self) -> tuple[str, str, str | None]:
        """The unit-image kinds of the optimization method shown (``3`` cycles it)."""
        return opt_kinds(self.state.opt_method)

    def _unit_kinds(self) -> list[str]:
        """The unit-images pane's kinds, ``opt`` being the shown method's (and its attribution map)."""
        opt, _, attr = self._opt_kinds()
        kinds = [opt if k == "opt" else k for k in self.settings.unit_image_kinds]
        return kinds + [attr] if attr and opt in kinds and self.settings.opt_attribution else kinds

    def _render_unit_images(self) -> None:
        st, pane = self.state, self._pane("unit_images")
        if not st.show_unit_images:
            R.fill(pane, self.style.disabled, "unit images off (9)", self.style)
            return
        layer = self.model.layers[st.layer]
        opt, _, attr = self._opt_kinds()
        slots = [(kind, self.loader.get(UnitImageKey(layer, st.unit, kind)))
                 for kind in self._unit_kinds() if kind != attr]
        alpha = self.loader.get(UnitImageKey(layer, st.unit, attr)) if attr in self._unit_kinds() else None
        if isinstance(alpha, np.ndarray):  # MACO's attribution map as transparency over black
            slots = [(k, R.through_alpha(img, alpha) if k == opt and isinstance(img, np.ndarray) else img)
                     for k, img in slots]
        R.render_unit_images(pane, self.style, slots, f"dvis precompute --model {self.model.name} --images DIR")

    def status_text(self) -> str:
        """The status line: source, layer:unit, shape, RF size, back settings, boosts, FPS, message."""
        st, s = self.state, self.settings
        layer = self.model.layers[st.layer]
        shape = "x".join(map(str, self.shapes[layer]))
        geom = self.layer_geometry[layer]
        if st.layer in self.disabled:
            shape = self.why_disabled(st.layer)
        elif geom.layout == "hwc":
            shape += " hwc"
        elif geom.layout == "tokens":
            shape += f" tokens+{geom.extra_tokens}" if geom.extra_tokens else " tokens"
        elif geom.layout == "partitioned":
            shape += " partitioned"
        rf = self.rfs.get(layer)
        rf_text = f" rf {rf.size[0]}x{rf.size[1]}" if rf is not None else ""
        if rf is not None and geom.global_context:
            rf_text += " +global"
        if st.camera:
            source = "camera (frozen)" if st.camera_frozen else "camera"
        else:
            source = Path(self.files.name(st.image)).name or "no images"
        back = f"back {st.back_mode}/{st.back_filter}" if st.back_on else "back off"
        if st.back_on and st.frozen:
            back += f" from {self._names()[st.frozen[0]]}:{st.frozen[1]}"
        view = "diffs" if st.show_diffs else ("patterns" if st.pattern else "acts")
        view = st.stats_view if st.stats_view != "off" else view
        ckpt = f" | {self.model.checkpoints[st.checkpoint].stem}" if st.checkpoint >= 0 else ""
        out = self.worker.output
        rate = 1 / out.seconds if out is not None and out.seconds > 0 else 0.0
        net_fps = f", net {rate:.{1 if rate < 10 else 0}f}/s" if rate else ""
        return (f"{source} | {self._names()[st.layer]}:{st.unit} [{shape}]{rf_text} | {back} | {view} "
                f"| boost {s.boost_indiv_choices[st.boost_indiv]:g}/{s.boost_gamma_choices[st.boost_gamma]:g}"
                f"{ckpt}{self._rate_text(net_fps)} | {self.message}")

    def _rate_text(self, net_fps: str) -> str:
        """' | 60 fps, net 4/s': the loop's frame rate while it runs steadily. The web page draws frames
        on demand (none while nothing changes), so there a rate under 1 would read '0 fps': left out."""
        fps = self.fps()
        shown = f"{fps:.0f} fps{net_fps}" if fps >= 1 else net_fps.lstrip(", ")
        return f" | {shown}" if shown else ""

    def png(self) -> bytes:
        """The canvas as PNG bytes (screenshots)."""
        return encode_image(self.canvas, "png")
