"""The toolbox core: settings + state + frame sources + workers + renderers -> one RGB canvas.

:class:`Toolbox` takes key names (:meth:`Toolbox.press`) and canvas clicks (:meth:`Toolbox.click`),
runs network passes in :class:`~dvis.toolbox.workers.ComputeWorker` and loads unit images in
:class:`~dvis.toolbox.workers.ImageLoader`, and draws with :meth:`Toolbox.render`. It opens no window
and writes no file: a driver (``dvis.toolbox.drivers`` for the OpenCV window and the headless key
list, ``dvis.web`` for the browser) shows the canvas and performs the effects keys return
(``screenshot``). It is not thread-safe: one driver thread calls it.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from dvis.errors import DvisError
from dvis.engine.geometry import model_geometry
from dvis.runtime.memory import map_large_blocks, release_free_heap, resident_bytes
from dvis.toolbox import render as R
from dvis.toolbox import stats_panes as SP
from dvis.toolbox.bindings import help_lines, key_map
from dvis.toolbox.actions import apply, select_at
from dvis.toolbox.inputs import Camera, FileSource, model_view
from dvis.toolbox.settings import Settings
from dvis.toolbox.state import Geometry, State
from dvis.toolbox.workers import (Back, ComputeWorker, ImageLoader, Job, NotThere, SpriteKey, UnitImageKey,
                                  compute, unit_image_loader, value_bytes)

log = logging.getLogger(__name__)

#: How often the frame loop hands freed heap back to the OS (a trim takes ~10 ms).
TRIM_EVERY_S = 2.0


def style_from(settings: Settings) -> R.Style:
    """Renderer style (colours, text size) from the settings."""
    return R.Style(text=settings.color_text, background=settings.color_background,
                   disabled=settings.color_disabled, stale=settings.color_stale,
                   selected=settings.color_selected, frozen=settings.color_frozen,
                   rf_box=settings.color_rf_box, positive=settings.color_positive,
                   negative=settings.color_negative,
                   font_size=0.45 * settings.global_scale * settings.font_scale)


def keeps_all_layers(values: int, footprint: int | None, budget: float) -> bool:
    """Whether a pass keeps every layer's values (``values`` bytes) rather than only the layers shown:
    they fit in ``budget`` times the inference ``footprint`` (bytes; None: unknown, keep all)."""
    return footprint is None or values <= budget * footprint


def display_shape(geom) -> tuple[int, ...]:
    """Per-unit shape shown for a layer: (C, H, W) for maps and token grids, (C,) for vectors, (1,)
    for a layer with nothing to show (it never runs, or its output has no unit layout)."""
    if geom is None or not geom.visualizable:
        return (1,)
    return (geom.channels,) + tuple(geom.grid) if geom.spatial else (geom.channels,)


class Toolbox:
    """One toolbox session on a LoadedModel.

    ``headless``: keys do not delay the worker (``pause_after_key_s`` is for held keys in a window).
    ``camera_factory(camera_id, mirror)`` opens the camera for the ``c`` key (the web driver passes
    the browser's camera); it raises DvisError when there is none.
    """

    def __init__(self, model, settings: Settings, headless: bool = False, compute_fn=compute,
                 camera_factory=Camera):
        self.model, self.settings, self.headless = model, settings, headless
        self.camera_factory = camera_factory
        self.style = style_from(settings)
        self.panes = settings.scaled_layout()
        self.canvas = np.zeros(settings.canvas_shape() + (3,), np.uint8)
        self.keymap = key_map(settings.key_bindings)
        self.help_rows = help_lines(settings.key_bindings)
        # One traced forward gives every layer's shape, layout and receptive field (dvis.engine.geometry).
        geometry = model_geometry(model)
        self.layer_geometry = {layer: geometry.get(layer) for layer in model.layers}
        self.shapes = {layer: display_shape(g) for layer, g in self.layer_geometry.items()}
        # Above the budget a pass keeps only what is shown and a layer change recomputes (settings).
        self.all_layers = keeps_all_layers(value_bytes(self.layer_geometry, model.layers), resident_bytes(),
                                           settings.all_layers_budget)
        self.rfs = {layer: g.rf if g is not None and g.visualizable and g.spatial else None
                    for layer, g in self.layer_geometry.items()}
        self.disabled = frozenset(i for i, layer in enumerate(model.layers) if self.shapes[layer] == (1,)
                                  and not (self.layer_geometry[layer] and self.layer_geometry[layer].visualizable))
        lh, lw = self.panes["layers"][2:]
        self.tile_layouts = [
            R.tile_layout(s[0], s[1:] if len(s) == 3 else (1, 1), (lh, lw), settings.tile_sep, settings.fc_tile_max)
            for s in (self.shapes[layer] for layer in model.layers)]
        self.files = FileSource(settings.images, settings.images_recursive, settings.images_pattern)
        self.unit_stats, self.stats_message = SP.load_stats(model)
        self.geo = Geometry(
            grids=tuple((t.rows, t.cols) for t in self.tile_layouts),
            n_units=tuple(self.shapes[layer][0] for layer in model.layers),
            n_images=len(self.files), n_checkpoints=len(model.checkpoints),
            n_boost_indiv=len(settings.boost_indiv_choices), n_boost_gamma=len(settings.boost_gamma_choices),
            back_presets=tuple(settings.back_presets), back_modes=tuple(settings.back_modes),
            back_filters=tuple(settings.back_filters),
            most_correlated=SP.correlated_table(self.unit_stats, model.layers))
        self.state = State(crop=settings.crop, show_top5=settings.show_top5,
                           show_unit_images=settings.show_unit_images)
        from dvis.formats.paths import unit_vis_origin

        self.message = self.files.message or f"unit images: {unit_vis_origin(model)}"  # computed or shipped
        self.camera = None  # what camera_factory returned while the camera is on
        self.frame: np.ndarray | None = None  # the model view of the current frame
        self.frame_id = None
        self._pane_cache: dict[str, tuple[tuple, np.ndarray]] = {}
        # Canvas rectangles (top, left, height, width) outside of which the last render left the canvas
        # exactly as the render before it (number renders - 1) did: a driver that diffs frames
        # compares only there. Whole panes, but only the outlines when the layers pane kept its grid.
        self.damage: list[tuple[int, int, int, int]] = [(0, 0, *self.canvas.shape[:2])]
        self.renders = 0
        self._layers_drawn = None  # (grid, outline boxes) the layers pane was drawn from at the last render
        self._help_drawn = False
        self._loop_times: list[float] = []
        map_large_blocks()  # per-frame canvases and panes must not fragment the heap (dvis.runtime.memory)
        self._trimmed = time.perf_counter()  # when tick last gave freed heap back to the OS
        self.worker = ComputeWorker(model, settings, functools.partial(compute_fn, geometry=self.layer_geometry))
        self.loader = ImageLoader(unit_image_loader(model.unit_vis_dir, *getattr(model, "unit_vis_dirs", [])[1:]),
                                  settings.unit_cache_bytes)
        if settings.start_in_camera:
            self.set_state(replace(self.state, camera=True))

    # ------------------------------------------------------------------ input handling

    def press(self, name: str) -> tuple[str, ...]:
        """Apply the action bound to key ``name``; returns the effects the driver must perform
        (see :mod:`dvis.toolbox.actions`). Failures become a status message."""
        action = self.keymap.get(name)
        if action is None:
            self.message = f"key '{name}' is not bound (h: help)"
            return ()
        if not self.headless:
            self.worker.note_key()
        try:
            step = apply(self.state, action, self.geo)
            self.set_state(step.state)
            return step.effects
        except Exception as exc:  # the window must never die from a key
            log.exception("key %s failed", name)
            self.message = f"{action}: {type(exc).__name__}: {exc}".splitlines()[0]
            return ()

    def click(self, x: int, y: int) -> None:
        """Select the layer name or unit tile under canvas pixel (x, y)."""
        top, left, h, w = self.panes["control"]
        if top <= y < top + h and left <= x < left + w:
            for i, (t, l, b, r) in R.control_page(self._names(), (h, w), self.style, self.state.layer).boxes:
                if t <= y - top < b and l <= x - left < r:
                    self.set_state(select_at(self.state, i, None, self.geo))
            return
        top, left, h, w = self.panes["layers"]
        if top <= y < top + h and left <= x < left + w and self.state.zoom == "off":
            layer = self.state.layer
            unit = self.tile_layouts[layer].unit_at(y - top, x - left, self.geo.n_units[layer])
            if unit is not None:
                self.set_state(select_at(self.state, layer, unit, self.geo))

    def set_state(self, new: State) -> None:
        """Switch to state ``new`` and carry out what the change implies (camera on/off, weights message)."""
        old, self.state = self.state, new
        if new.camera and not old.camera:
            try:
                self.camera = self.camera_factory(self.settings.camera_id, self.settings.camera_mirror)
                self.message = f"camera {getattr(self.camera, 'name', self.settings.camera_id)}"
            except DvisError as exc:
                self.message = str(exc)
                self.state = replace(self.state, camera=False)
        elif old.camera and not new.camera and self.camera is not None:
            self.camera.close()
            self.camera = None
        if new.checkpoint != old.checkpoint:
            cps = self.model.checkpoints
            self.message = f"weights: {cps[new.checkpoint].name}" if new.checkpoint >= 0 else "weights: final"

    # ------------------------------------------------------------------ frames and jobs

    def update(self) -> None:
        """Fetch the current frame, submit the job the state asks for, and request unit images."""
        st = self.state
        if st.camera and self.camera is not None:
            latest = self.camera.latest()
            if latest is not None and not st.camera_frozen:
                self._set_frame(("camera", latest[0], st.crop), latest[1])
        elif not st.camera:
            index, frame, msg = self.files.read(st.image, st.image_step)
            if msg:
                self.message = msg
            if index != st.image:
                self.state = st = replace(st, image=index)
            self._set_frame(("file", index, st.crop), frame)
        if self.frame is not None:
            self.worker.submit(self.job())
        layer, unit = self.model.layers[st.layer], st.unit
        wanted = [UnitImageKey(layer, unit, k) for k in self.settings.unit_image_kinds] if st.show_unit_images else []
        if st.pattern:
            wanted.insert(0, SpriteKey(layer, "opt"))
        self.loader.want(wanted)

    def _set_frame(self, frame_id, frame: np.ndarray | None) -> None:
        if frame_id == self.frame_id:
            return
        self.frame_id = frame_id
        self.frame = None if frame is None else model_view(frame, self.model.input_size, self.state.crop,
                                                          self.model.channels)

    def job(self) -> Job:
        """The compute job for the current state and frame."""
        st = self.state
        back = None
        if st.back_on and st.back_source()[0] not in self.disabled:
            layer, unit = st.back_source()
            back = Back(self.model.layers[layer], unit, st.back_mode)
        return Job(frame_id=self.frame_id, frame=self.frame, back=back,
                   diff_layer=self.model.layers[st.layer] if st.back_on else None,
                   checkpoint=st.checkpoint, occlusion=st.occlusion,
                   layers=None if self.all_layers else self.shown_layers())

    def shown_layers(self) -> tuple[str, ...]:
        """The layers whose values the panes show: the selected one and the last (class scores)."""
        layers = self.model.layers
        return tuple(dict.fromkeys((layers[self.state.layer], layers[-1])))

    def settle(self, timeout: float = 120.0) -> None:
        """Headless: update until the worker and the loader have caught up with the state."""
        for _ in range(3):
            self.update()
            if not (self.worker.wait(timeout) and self.loader.wait(timeout)):
                raise DvisError(f"the worker did not finish within {timeout:.0f} s")
            out = self.worker.output
            if out is not None and out.job.key == self.job().key:
                return

    # ------------------------------------------------------------------ rendering

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
        caption = self._back_caption()
        R.render_back(self._pane("back"), self.style, back_img, caption if back_img is not None else
                      (self._waiting() if st.back_on else "back-projection off (b)"), stale=stale)
        R.render_control(self._pane("control"), self._names(), st.layer, self.style,
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
                          "zoom: back-projection off (b)")
            return
        if st.stats_view != "off":
            self._render_stats_tiles(pane)
            return
        if tiles is None:
            R.fill(pane, self.style.stale, self._waiting(), self.style)
            return
        if st.zoom == "unit":
            R.paint(pane, self.style.background)
            R.blit_fit(pane, tiles[st.unit])
            return
        images = tiles
        if st.pattern:
            sprite = self.loader.get(SpriteKey(self.model.layers[st.layer], "opt"))
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
                       top5, overlay, msg)

    def rf_box(self, acts: np.ndarray | None) -> tuple[int, int, int, int] | None:
        """Receptive field (input pixels) of the selected unit at its max position, for conv maps."""
        rf = self.rfs.get(self.model.layers[self.state.layer])
        if not self.settings.input_overlay_rf or rf is None or acts is None or acts.ndim != 3:
            return None
        y, x = np.unravel_index(int(np.argmax(acts[self.state.unit])), acts.shape[1:])
        return rf.box(int(y), int(x))

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
        caption = f"{self._names()[st.layer]}:{st.unit} max {value:.3g}"
        extra = out.extra.get(self.model.layers[st.layer]) if out is not None else None
        if extra is not None:  # class / register tokens are shown apart from the patch grid
            caption += " | tokens " + " ".join(f"{v:.3g}" for v in extra[:, st.unit])
        R.render_aux(pane, self.style, tiles[st.unit], caption=caption)
        classes = self.unit_stats.classes if self.unit_stats is not None else []
        SP.render_lines(pane, SP.unit_lines(self._layer_stats(), st.unit, classes), self.style)

    def _render_unit_images(self) -> None:
        st, pane = self.state, self._pane("unit_images")
        if not st.show_unit_images:
            R.fill(pane, self.style.disabled, "unit images off (9)", self.style)
            return
        layer = self.model.layers[st.layer]
        slots = [(kind, self.loader.get(UnitImageKey(layer, st.unit, kind)))
                 for kind in self.settings.unit_image_kinds]
        R.render_unit_images(pane, self.style, slots)

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
                f"{ckpt} | {self.fps():.0f} fps{net_fps} | {self.message}")

    def fps(self) -> float:
        t = self._loop_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        self._loop_times = (self._loop_times + [now])[-30:]
        if now - self._trimmed >= TRIM_EVERY_S:  # frames free MBs each; see dvis.runtime.memory
            release_free_heap()
            self._trimmed = now

    def add_image(self, name: str, frame: np.ndarray) -> None:
        """Append an in-memory image (a web upload) to the image list and show it."""
        index = self.files.add(name, frame)
        self.geo = replace(self.geo, n_images=len(self.files))
        self.set_state(replace(self.state, image=index, camera=False))
        self.message = f"added {name}"

    def png(self) -> bytes:
        """The canvas as PNG bytes (screenshots)."""
        ok, data = cv2.imencode(".png", cv2.cvtColor(self.canvas, cv2.COLOR_RGB2BGR))
        if not ok:
            raise DvisError("cannot encode the canvas as PNG")
        return data.tobytes()

    def close(self) -> None:
        self.worker.close()
        self.loader.close()
        if self.camera is not None:
            self.camera.close()
