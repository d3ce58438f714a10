"""The toolbox's view state and its pure transition function ``apply(state, action, geometry)``."""
from __future__ import annotations

from dataclasses import dataclass, replace

ZOOM_MODES = ("off", "unit", "back")


@dataclass(frozen=True)
class Geometry:
    """What transitions need to know about the model and inputs."""

    grids: tuple[tuple[int, int], ...]  # (rows, cols) of each layer's tile grid
    n_units: tuple[int, ...]  # channels (conv) or units (fc) of each layer
    n_images: int = 0
    n_checkpoints: int = 0
    n_boost_indiv: int = 5
    n_boost_gamma: int = 4
    back_presets: tuple[tuple[str, str], ...] = (("grad", "raw"),)
    back_modes: tuple[str, ...] = ("grad", "deconv", "guided")
    back_filters: tuple[str, ...] = ("raw", "gray", "norm", "normblur")


@dataclass(frozen=True)
class State:
    """Everything the window shows that keys can change."""

    layer: int = 0
    unit: int = 0
    on_layer_list: bool = False  # cursor is on the layer list (control pane) instead of the tiles
    back_on: bool = False
    back_mode: str = "grad"
    back_filter: str = "raw"
    frozen: tuple[int, int] | None = None  # (layer, unit) whose back-projection stays shown
    show_diffs: bool = False  # tiles show back diffs instead of activations
    zoom: str = "off"
    pattern: bool = False
    boost_indiv: int = 0  # index into Settings.boost_indiv_choices
    boost_gamma: int = 0  # index into Settings.boost_gamma_choices
    show_top5: bool = True
    show_unit_images: bool = True
    show_help: bool = False
    occlusion: bool = False
    image: int = 0
    camera: bool = False
    camera_frozen: bool = False
    crop: bool = True
    checkpoint: int = -1  # -1: final weights; else index into LoadedModel.checkpoints
    quit: bool = False

    def back_source(self) -> tuple[int, int]:
        """(layer, unit) being back-projected: the frozen one, else the selection."""
        return self.frozen if self.frozen is not None else (self.layer, self.unit)


def _move(state: State, geo: Geometry, dy: int, dx: int) -> State:
    if state.on_layer_list:
        if dy > 0:
            return replace(state, on_layer_list=False)
        return _change_layer(state, geo, dx) if dx else state
    rows, cols = geo.grids[state.layer]
    n = geo.n_units[state.layer]
    r, c = divmod(state.unit, cols)
    if dy < 0 and r == 0:
        return replace(state, on_layer_list=True)
    r = max(0, min(rows - 1, r + dy))
    c = max(0, min(cols - 1, c + dx))
    return replace(state, unit=min(r * cols + c, n - 1))


def _clamp(i: int, n: int) -> int:
    return max(0, min(n - 1, i))


def _change_layer(state: State, geo: Geometry, step: int) -> State:
    layer = _clamp(state.layer + step, len(geo.n_units))
    return replace(state, layer=layer, unit=min(state.unit, geo.n_units[layer] - 1))


def _cycle_back(state: State, geo: Geometry) -> State:
    presets = geo.back_presets
    if not state.back_on:
        mode, filt = presets[0]
        return replace(state, back_on=True, back_mode=mode, back_filter=filt)
    current = (state.back_mode, state.back_filter)
    if current in presets and presets.index(current) + 1 < len(presets):
        mode, filt = presets[presets.index(current) + 1]
        return replace(state, back_mode=mode, back_filter=filt)
    return replace(state, back_on=False, show_diffs=False)


def _next(items: tuple, current, step: int = 1):
    return items[(items.index(current) + step) % len(items)] if current in items else items[0]


def _toggle(name: str):
    return lambda s, g: replace(s, **{name: not getattr(s, name)})


_ACTIONS = {
    "sel_up": lambda s, g: _move(s, g, -1, 0),
    "sel_down": lambda s, g: _move(s, g, 1, 0),
    "sel_left": lambda s, g: _move(s, g, 0, -1),
    "sel_right": lambda s, g: _move(s, g, 0, 1),
    "sel_up_fast": lambda s, g: _move(s, g, -3, 0),
    "sel_down_fast": lambda s, g: _move(s, g, 3, 0),
    "sel_left_fast": lambda s, g: _move(s, g, 0, -3),
    "sel_right_fast": lambda s, g: _move(s, g, 0, 3),
    "prev_layer": lambda s, g: _change_layer(s, g, -1),
    "next_layer": lambda s, g: _change_layer(s, g, 1),
    "cycle_back": _cycle_back,
    "back_mode": lambda s, g: replace(s, back_mode=_next(g.back_modes, s.back_mode)),
    "back_filter": lambda s, g: replace(s, back_filter=_next(g.back_filters, s.back_filter)),
    "freeze_back": lambda s, g: replace(s, frozen=None if s.frozen is not None else (s.layer, s.unit)),
    "toggle_diffs": _toggle("show_diffs"),
    "zoom": lambda s, g: replace(s, zoom=_next(ZOOM_MODES, s.zoom)),
    "pattern": _toggle("pattern"),
    "boost_indiv": lambda s, g: replace(s, boost_indiv=(s.boost_indiv + 1) % g.n_boost_indiv),
    "boost_gamma": lambda s, g: replace(s, boost_gamma=(s.boost_gamma + 1) % g.n_boost_gamma),
    "toggle_top5": _toggle("show_top5"),
    "toggle_unit_images": _toggle("show_unit_images"),
    "next_image": lambda s, g: replace(s, image=(s.image + 1) % g.n_images if g.n_images else 0),
    "prev_image": lambda s, g: replace(s, image=(s.image - 1) % g.n_images if g.n_images else 0),
    "camera": _toggle("camera"),
    "freeze_camera": _toggle("camera_frozen"),
    "crop": _toggle("crop"),
    "occlusion": _toggle("occlusion"),
    # Checkpoints step -1 (final weights) -> 0 -> ... -> n-1 -> -1.
    "next_checkpoint": lambda s, g: replace(s, checkpoint=(s.checkpoint + 2) % (g.n_checkpoints + 1) - 1),
    "prev_checkpoint": lambda s, g: replace(s, checkpoint=s.checkpoint % (g.n_checkpoints + 1) - 1),
    "help": _toggle("show_help"),
    "reset": lambda s, g: State(image=s.image, camera=s.camera, crop=s.crop, checkpoint=s.checkpoint,
                                show_top5=s.show_top5, show_unit_images=s.show_unit_images),
    "quit": lambda s, g: replace(s, quit=True),
    "screenshot": lambda s, g: s,  # a side effect only; the app writes the file
}

ACTIONS = tuple(_ACTIONS)


def apply(state: State, action: str, geo: Geometry) -> State:
    """The state after ``action``; unknown actions leave it unchanged."""
    fn = _ACTIONS.get(action)
    return fn(state, geo) if fn else state


def select_at(state: State, layer: int, unit: int | None, geo: Geometry) -> State:
    """State after a mouse click on a layer name (``unit`` None) or on a unit tile."""
    layer = _clamp(layer, len(geo.n_units))
    if unit is None:
        return replace(state, layer=layer, unit=min(state.unit, geo.n_units[layer] - 1), on_layer_list=True)
    return replace(state, layer=layer, unit=_clamp(unit, geo.n_units[layer]), on_layer_list=False)
