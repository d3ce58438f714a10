"""The toolbox's view state and the pure transition helpers the action table (``dvis.toolbox.actions``) uses."""
from __future__ import annotations

from dataclasses import dataclass, replace

from dvis.toolbox.layer_list import block_step

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
    # per layer, per unit: the most correlated other unit (-1: none), from the unit statistics
    most_correlated: tuple[tuple[int, ...], ...] = ()
    # the first layer of each block of the layer list (dvis.toolbox.layer_list.group_layers)
    block_starts: tuple[int, ...] = ()
    # optimization methods with images in the model's unit images (dvis.formats.unit_vis.opt_methods)
    opt_methods: tuple[str, ...] = ("pixel",)


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
    opt_method: str = "pixel"  # whose optimized images the unit-images pane and pattern mode show
    stats_view: str = "off"  # tiles show unit statistics: "hist" (histograms) or "corr" (correlation)
    boost_indiv: int = 0  # index into Settings.boost_indiv_choices
    boost_gamma: int = 0  # index into Settings.boost_gamma_choices
    show_top5: bool = True
    show_unit_images: bool = True
    show_help: bool = False
    occlusion: bool = False
    image: int = 0
    image_step: int = 1  # direction of the last image step: unreadable files are skipped this way
    camera: bool = False
    camera_frozen: bool = False
    crop: bool = True
    checkpoint: int = -1  # -1: final weights; else index into LoadedModel.checkpoints
    quit: bool = False

    def back_source(self) -> tuple[int, int]:
        """(layer, unit) being back-projected: the frozen one, else the selection."""
        return self.frozen if self.frozen is not None else (self.layer, self.unit)


def move(state: State, geo: Geometry, dy: int, dx: int) -> State:
    if state.on_layer_list:
        if dy > 0:
            return replace(state, on_layer_list=False)
        return change_layer(state, geo, dx) if dx else state
    rows, cols = geo.grids[state.layer]
    n = geo.n_units[state.layer]
    r, c = divmod(state.unit, cols)
    if dy < 0 and r == 0:
        return replace(state, on_layer_list=True)
    r = max(0, min(rows - 1, r + dy))
    c = max(0, min(cols - 1, c + dx))
    return replace(state, unit=min(r * cols + c, n - 1))


def clamp(i: int, n: int) -> int:
    return max(0, min(n - 1, i))


def change_layer(state: State, geo: Geometry, step: int) -> State:
    layer = clamp(state.layer + step, len(geo.n_units))
    return replace(state, layer=layer, unit=min(state.unit, geo.n_units[layer] - 1))


def change_block(state: State, geo: Geometry, step: int) -> State:
    """To the first layer of the block ``step`` blocks on (back: the current block's start first)."""
    return change_layer(state, geo, block_step(geo.block_starts, state.layer, step) - state.layer)


def cycle_back(state: State, geo: Geometry) -> State:
    presets = geo.back_presets
    if not state.back_on:
        mode, filt = presets[0]
        return replace(state, back_on=True, back_mode=mode, back_filter=filt)
    current = (state.back_mode, state.back_filter)
    if current in presets and presets.index(current) + 1 < len(presets):
        mode, filt = presets[presets.index(current) + 1]
        return replace(state, back_mode=mode, back_filter=filt)
    return replace(state, back_on=False, show_diffs=False)


def next_item(items: tuple, current, step: int = 1):
    return items[(items.index(current) + step) % len(items)] if current in items else items[0]


def toggle(name: str):
    return lambda s, g: replace(s, **{name: not getattr(s, name)})
