"""The toolbox core: settings + state + frame sources + workers + renderers -> one RGB canvas.

:class:`Toolbox` takes key names (:meth:`Toolbox.press`) and canvas clicks (:meth:`Toolbox.click`),
runs network passes in :class:`~dvis.toolbox.workers.ComputeWorker` and loads unit images in
:class:`~dvis.toolbox.workers.ImageLoader`, and draws with :meth:`Toolbox.render`. It opens no window
and writes no file: a driver (``dvis.toolbox.drivers`` for the OpenCV window and the headless key
list, ``dvis.web`` for the browser) shows the canvas and performs the effects keys return
(``screenshot``). It is not thread-safe: one driver thread calls it.

This module is the core loop (inputs, state changes, frames and jobs); drawing the panes is
:class:`dvis.toolbox.painting.Painting`, its base.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace

import numpy as np

from dvis.constants import OPT_METHODS
from dvis.errors import DvisError
from dvis.formats.unit_vis import UnitImages, opt_methods
from dvis.engine.geometry import model_geometry
from dvis.runtime.memory import map_large_blocks, release_free_heap, resident_bytes
from dvis.toolbox import render as R
from dvis.toolbox import stats_panes as SP
from dvis.toolbox.bindings import help_lines, key_map
from dvis.toolbox.control_pane import control_page
from dvis.toolbox.layer_list import group_layers
from dvis.toolbox.actions import apply, select_at
from dvis.toolbox.inputs import Camera, FileSource, model_view
from dvis.toolbox.painting import Painting, style_from
from dvis.toolbox.settings import Settings
from dvis.toolbox.state import Geometry, State, next_item
from dvis.toolbox.workers import (Back, ComputeWorker, ImageLoader, Job, SpriteKey, UnitImageKey,
                                  compute, unit_image_loader, value_bytes)

log = logging.getLogger(__name__)

#: How often the frame loop hands freed heap back to the OS (a trim takes ~10 ms).
TRIM_EVERY_S = 2.0


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



def computed_opt_methods(model) -> tuple[str, ...]:
    """The optimization methods with images for some layer of ``model``'s unit images, in
    :data:`dvis.constants.OPT_METHODS` order (pixel alone when there are none)."""
    dirs = [d for d in model.unit_vis_dirs if d is not None]
    if not dirs:
        return ("pixel",)
    reader = UnitImages(*dirs)
    found = {m for layer in reader.layers() for m in opt_methods(reader.layout(layer))}
    return tuple(m for m in OPT_METHODS if m in found) or ("pixel",)

class Toolbox(Painting):
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
            most_correlated=SP.correlated_table(self.unit_stats, model.layers),
            block_starts=group_layers(self._names()).starts, opt_methods=computed_opt_methods(model))
        self.state = State(image=self.files.start_for(model.input_size), crop=settings.crop,
                           show_top5=settings.show_top5,
                           show_unit_images=settings.show_unit_images,
                           opt_method=next_item(self.geo.opt_methods, settings.opt_method, 0))
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
            for i, (t, l, b, r) in control_page(self._names(), (h, w), self.style, self.state.layer).boxes:
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
        wanted = [UnitImageKey(layer, unit, k) for k in self._unit_kinds()] if st.show_unit_images else []
        if st.pattern:
            wanted.insert(0, SpriteKey(layer, self._opt_kinds()[0]))
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

    # ------------------------------------------------------------------ the driver's loop, added images

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

    def close(self) -> None:
        self.worker.close()
        self.loader.close()
        if self.camera is not None:
            self.camera.close()

