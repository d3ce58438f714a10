"""The table of toolbox actions: one row per action gives its default keys, its help line, its pure
state transition and the side effect a driver performs. Key bindings (``settings.key_bindings``),
the help overlay and :func:`apply` all derive from :data:`TABLE`.

To add an action or a display mode (e.g. the statistic panes of ``dvis/toolbox/stats_panes.py``):
  1. add a field to :class:`~dvis.toolbox.state.State` if the mode needs one;
  2. add one :class:`Action` row below (name, default keys, help, ``step``; ``effect`` only for
     something outside the state, like writing a file);
  3. read the field where the pane is drawn (``dvis/toolbox/app.py`` ``render``).
Bindings, ``h`` help, the web page's keys and the state tests pick the row up from here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

from dvis.toolbox.state import (ZOOM_MODES, Geometry, State, change_block, change_layer, clamp, cycle_back, move,
                                next_item, toggle)

#: The effect of ``screenshot``: the driver saves (window, headless) or downloads (web) the canvas.
SCREENSHOT = "screenshot"


@dataclass(frozen=True)
class Action:
    name: str
    keys: tuple[str, ...]  # default key names (see dvis.toolbox.keys)
    help: str  # the line in the help overlay
    step: Callable[[State, Geometry], State]  # pure transition
    effect: str | None = None  # side effect for the driver, e.g. SCREENSHOT


def _image_step(step: int) -> Callable[[State, Geometry], State]:
    # image_step tells the frame source which way to skip unreadable files.
    return lambda s, g: replace(s, image=(s.image + step) % g.n_images if g.n_images else 0, image_step=step)


def _stats_view(view: str) -> Callable[[State, Geometry], State]:
    return lambda s, g: replace(s, stats_view="off" if s.stats_view == view else view)


def _jump_correlated(s: State, g: Geometry) -> State:
    row = g.most_correlated[s.layer] if s.layer < len(g.most_correlated) else ()
    best = row[s.unit] if s.unit < len(row) else -1
    return replace(s, unit=best, on_layer_list=False) if best >= 0 else s


def _reset(s: State, g: Geometry) -> State:
    return State(image=s.image, camera=s.camera, crop=s.crop, checkpoint=s.checkpoint,
                 show_top5=s.show_top5, show_unit_images=s.show_unit_images)


# Every Shift binding has an unshifted alternate: OpenCV's Qt backend (the pip wheel on Linux) reports
# Shift+t as "t".
TABLE: tuple[Action, ...] = (
    Action("sel_up", ("up", "i"), "move selection up (from the top row: to the layer list)",
           lambda s, g: move(s, g, -1, 0)),
    Action("sel_down", ("down", "k"), "move selection down (from the layer list: into the tiles)",
           lambda s, g: move(s, g, 1, 0)),
    Action("sel_left", ("left", "j"), "move selection left / previous layer on the layer list",
           lambda s, g: move(s, g, 0, -1)),
    Action("sel_right", ("right", "l"), "move selection right / next layer on the layer list",
           lambda s, g: move(s, g, 0, 1)),
    Action("sel_up_fast", ("I", "-"), "move selection up 3", lambda s, g: move(s, g, -3, 0)),
    Action("sel_down_fast", ("K", "="), "move selection down 3", lambda s, g: move(s, g, 3, 0)),
    Action("sel_left_fast", ("J", "["), "move selection left 3", lambda s, g: move(s, g, 0, -3)),
    Action("sel_right_fast", ("L", "]"), "move selection right 3", lambda s, g: move(s, g, 0, 3)),
    Action("prev_layer", ("u",), "previous layer, keep the cursor", lambda s, g: change_layer(s, g, -1)),
    Action("next_layer", ("o",), "next layer, keep the cursor", lambda s, g: change_layer(s, g, 1)),
    Action("prev_block", ("U", ","), "previous block of the layer list (its first layer)",
           lambda s, g: change_block(s, g, -1)),
    Action("next_block", ("O", "."), "next block of the layer list (its first layer)", lambda s, g: change_block(s, g, 1)),
    Action("cycle_back", ("b",), "back-projection: off / grad raw / grad norm / deconv raw / guided raw",
           cycle_back),
    Action("back_mode", ("n",), "back mode: grad / deconv / guided",
           lambda s, g: replace(s, back_mode=next_item(g.back_modes, s.back_mode))),
    Action("back_filter", ("m",), "back filter: raw / gray / norm / normblur",
           lambda s, g: replace(s, back_filter=next_item(g.back_filters, s.back_filter))),
    Action("freeze_back", ("d",), "freeze / unfreeze the back-projected unit",
           lambda s, g: replace(s, frozen=None if s.frozen is not None else (s.layer, s.unit))),
    Action("toggle_diffs", ("a",), "tiles show activations / back diffs", toggle("show_diffs")),
    Action("zoom", ("z",), "zoom: unit / back-projection / off",
           lambda s, g: replace(s, zoom=next_item(ZOOM_MODES, s.zoom))),
    Action("pattern", ("s",), "pattern mode: optimized images as tiles", toggle("pattern")),
    Action("opt_method", ("3",), "optimized images: next method computed (pixel / fourier / maco / accentuate)",
           lambda s, g: replace(s, opt_method=next_item(g.opt_methods, s.opt_method))),
    Action("hist_mode", ("1",), "histogram mode: each tile its unit's score histogram (dead units red)",
           _stats_view("hist")),
    Action("corr_mode", ("r",), "correlation mode: tiles coloured by correlation with the selected unit",
           _stats_view("corr")),
    Action("jump_correlated", ("R", "2"), "jump to the unit most correlated with the selected one", _jump_correlated),
    Action("boost_indiv", ("t",), "per-channel contrast boost",
           lambda s, g: replace(s, boost_indiv=(s.boost_indiv + 1) % g.n_boost_indiv)),
    Action("boost_gamma", ("T", "y"), "gamma contrast boost",
           lambda s, g: replace(s, boost_gamma=(s.boost_gamma + 1) % g.n_boost_gamma)),
    Action("toggle_top5", ("8",), "top-5 labels on the input", toggle("show_top5")),
    Action("toggle_unit_images", ("9",), "unit images pane on / off", toggle("show_unit_images")),
    Action("next_image", ("e", "pagedown"), "next image", _image_step(1)),
    Action("prev_image", ("w", "pageup"), "previous image", _image_step(-1)),
    Action("camera", ("c",), "camera / files", toggle("camera")),
    Action("freeze_camera", ("f",), "freeze / unfreeze the camera frame", toggle("camera_frozen")),
    Action("crop", ("0",), "crop / stretch frames to the model input", toggle("crop")),
    Action("occlusion", ("x",), "occlusion map overlay on the input", toggle("occlusion")),
    # Checkpoints step -1 (final weights) -> 0 -> ... -> n-1 -> -1.
    Action("next_checkpoint", ("v",), "next training checkpoint (feature evolution)",
           lambda s, g: replace(s, checkpoint=(s.checkpoint + 2) % (g.n_checkpoints + 1) - 1)),
    Action("prev_checkpoint", ("V", "g"), "previous training checkpoint",
           lambda s, g: replace(s, checkpoint=s.checkpoint % (g.n_checkpoints + 1) - 1)),
    Action("help", ("h",), "this help", toggle("show_help")),
    Action("reset", ("esc",), "reset the view", _reset),
    Action("quit", ("q",), "quit", lambda s, g: replace(s, quit=True)),
    Action("screenshot", ("p",), "save a PNG screenshot (to screenshot_dir; on the web page: a download)", lambda s, g: s, SCREENSHOT),
)

BY_NAME: dict[str, Action] = {a.name: a for a in TABLE}
ACTIONS = tuple(BY_NAME)


class Step(NamedTuple):
    """The state after an action and the side effects a driver performs for it."""

    state: State
    effects: tuple[str, ...] = ()


def apply(state: State, action: str, geo: Geometry) -> Step:
    """The state after ``action`` and its effects; unknown actions leave the state unchanged."""
    row = BY_NAME.get(action)
    if row is None:
        return Step(state)
    return Step(row.step(state, geo), (row.effect,) if row.effect else ())


def default_bindings() -> dict[str, tuple[str, ...]]:
    """action -> default key names, in table order."""
    return {a.name: a.keys for a in TABLE}


def select_at(state: State, layer: int, unit: int | None, geo: Geometry) -> State:
    """State after a mouse click on a layer name (``unit`` None) or on a unit tile."""
    layer = clamp(layer, len(geo.n_units))
    if unit is None:
        return replace(state, layer=layer, unit=min(state.unit, geo.n_units[layer] - 1), on_layer_list=True)
    return replace(state, layer=layer, unit=clamp(unit, geo.n_units[layer]), on_layer_list=False)
