"""Toolbox settings: documented defaults, overridden by ``settings_local.py``, then by CLI flags.

Every field of :class:`Settings` is a setting name. ``settings_local.py`` (copied from
``settings/settings_local.template-<model>.py``) assigns any of them as module-level variables;
an unknown name is an error that names the closest valid one, and a value of the wrong type one
that names the setting, the value and the type (:func:`check_types`).
"""
from __future__ import annotations

import dataclasses
import numbers
import os
import runpy
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvis.errors import DvisError, suggestions
from dvis.toolbox.actions import default_bindings

RGB = tuple[int, int, int]
Rect = tuple[int, int, int, int]


def _default_layout() -> dict[str, Rect]:
    # (top, left, height, width) in pixels of the 930 x 1500 base window, scaled by global_scale.
    return {
        "input": (0, 0, 300, 300),
        "aux": (300, 0, 300, 300),
        "back": (600, 0, 300, 300),
        "control": (0, 300, 60, 900),
        "layers": (60, 300, 840, 900),
        "unit_images": (0, 1200, 900, 300),
        "status": (900, 0, 30, 1500),
    }


@dataclass
class Settings:
    """All toolbox settings with their defaults."""

    # --- model and inputs ---
    model: str | None = None  # model folder name or path, model.yaml or torchvision architecture; None = zf-cifar10
    weights: str | None = None  # overrides model.yaml's weights: a state_dict file, torchvision weights name or "none"
    device: str = "cpu"  # torch device for the forward/backward passes
    images: str = "input_images"  # image folder, list file or single image
    images_recursive: bool = True  # look in subfolders of `images`
    images_pattern: str | None = None  # regular expression that file paths must match
    camera_id: int = 0  # cv2.VideoCapture index
    start_in_camera: bool = False  # start on the camera instead of the files
    camera_mirror: bool = True  # flip camera frames left-right, like a mirror
    crop: bool = True  # True: center-crop frames to the model's aspect; False: stretch them

    # --- window and layout ---
    window_title: str = "dvis toolbox"
    window_size: tuple[int, int] = (930, 1500)  # (height, width) of the base canvas before global_scale
    global_scale: float = 1.0  # scales the whole canvas and its layout
    font_scale: float = 1.0  # scales all text on top of global_scale
    layout: dict[str, Rect] = field(default_factory=_default_layout)  # pane -> (top, left, height, width)
    tile_sep: int = 1  # pixels between tiles in the layers pane
    fc_tile_max: int = 24  # largest square (pixels) for one fc unit in the layers pane
    max_fps: float = 60.0  # cap on the window loop

    # --- colours (RGB) ---
    color_background: RGB = (24, 24, 24)
    color_text: RGB = (230, 230, 230)
    color_disabled: RGB = (60, 60, 60)  # pane that is switched off or has nothing to show
    color_stale: RGB = (77, 77, 51)  # pane whose content is being recomputed
    color_selected: RGB = (255, 215, 0)  # outline of the selected unit and the current layer
    color_frozen: RGB = (0, 200, 255)  # outline of the frozen back-projection unit and layer
    color_rf_box: RGB = (0, 255, 0)  # receptive-field box on the input pane
    color_positive: RGB = (255, 170, 40)  # positive back diffs in the tiles
    color_negative: RGB = (40, 140, 255)  # negative back diffs in the tiles

    # --- display choices ---
    boost_indiv_choices: tuple[float, ...] = (0.0, 0.3, 0.5, 0.8, 1.0)  # 't': per-channel normalization strength
    boost_gamma_choices: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3)  # 'T': gamma applied after normalization
    back_presets: tuple[tuple[str, str], ...] = (  # 'b' cycles off -> these (mode, filter) -> off
        ("grad", "raw"), ("grad", "norm"), ("deconv", "raw"), ("guided", "raw"))
    back_modes: tuple[str, ...] = ("grad", "deconv", "guided")  # 'n' cycles these
    back_filters: tuple[str, ...] = ("raw", "gray", "norm", "normblur")  # 'm' cycles these
    show_top5: bool = True  # '8': top-5 labels on the input pane
    show_unit_images: bool = True  # '9': optimized image / top-9 / top-9 deconv pane
    unit_image_kinds: tuple[str, ...] = ("opt", "top9", "deconv")  # stacked top to bottom
    # '3' cycles the methods computed; "opt" above stands for this method's images (docs/optvis.md)
    opt_method: str = "pixel"
    opt_attribution: bool = True  # spectral methods' images shown through their attribution map (MACO)
    input_overlay_rf: bool = True  # receptive-field box of the selected unit on the input pane

    # --- responsiveness ---
    pause_after_key_s: float = 0.15  # the worker waits this long after a key before a new pass
    # Byte bound of the unit-image cache. A screen shows one unit's images (zf-cifar10: ~190 KB for
    # its four kinds) and in pattern mode one layer's opt sprite (<= 3 MiB); 16 MiB keeps ~80 units
    # browsed; the rest is re-cut from the decoded-sprite cache (dvis.formats.unit_vis). A sprite over the
    # bound (big models' pattern mode) is still kept: the cache always holds its newest entry.
    unit_cache_bytes: int = 16 * 2**20
    # Each pass keeps every layer's values (a layer change needs no new pass) while they total at most
    # this fraction of the memory plain inference takes (the process's resident size once the model is
    # loaded); above it, only the layers shown (the selected one and the class output), and a layer
    # change costs one forward. 0.25: two frames' values (the one shown while the next is computed)
    # stay within half the inference footprint (docs/toolbox.md).
    all_layers_budget: float = 0.25
    occlusion_patch: float = 0.25  # occlusion square side as a fraction of the model input ('x')
    occlusion_steps: int = 12  # occluder positions per side (the map is steps x steps)

    # --- keys and output ---
    key_bindings: dict[str, tuple[str, ...]] = field(default_factory=default_bindings)  # defaults: dvis.toolbox.actions
    screenshot_dir: str = "screenshots"  # 'p' writes PNGs here

    def scaled_layout(self) -> dict[str, Rect]:
        """Pane rectangles in canvas pixels after ``global_scale``."""
        s = self.global_scale
        return {k: tuple(int(round(v * s)) for v in r) for k, r in self.layout.items()}

    def canvas_shape(self) -> tuple[int, int]:
        """(height, width) of the canvas after ``global_scale``."""
        return tuple(int(round(v * self.global_scale)) for v in self.window_size)


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings))
#: Each setting's type, as annotated on :class:`Settings`.
SETTING_TYPES = typing.get_type_hints(Settings)


class _Mismatch(Exception):
    pass


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as a value of the type ``hint`` (ints pass for floats, lists for tuples, paths for
    strings); raises _Mismatch when it is of another type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(value, arg)
            except _Mismatch:
                pass
    elif hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint in (int, float):  # bool is an int to Python, never a number to a setting
        if isinstance(value, numbers.Integral if hint is int else numbers.Real) and not isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
    elif origin is tuple and isinstance(value, (tuple, list)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) == len(args):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
    elif origin is dict and isinstance(value, dict):
        return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
    raise _Mismatch


def _type_name(hint: Any) -> str:
    """``hint`` as written in Python (``float``, ``str | None``, ``tuple[int, int, int]``)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(map(_type_name, args))
    if hint is type(None):
        return "None"
    if not args:
        return hint.__name__
    names = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
    return f"{typing.get_origin(hint).__name__}[{names}]"


def takes_text(name: str) -> bool:
    """Whether setting ``name`` is text (``str`` or ``str | None``): a command line's value stays as written."""
    hint = SETTING_TYPES.get(name)
    return hint is str or set(typing.get_args(hint)) == {str, type(None)}


def check_types(values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` (setting -> value) with each value as its setting's type (:func:`_coerce`); raises
    :class:`DvisError` naming the setting, the value and the type expected for the first that is not."""
    checked = {}
    for name, value in values.items():
        hint = SETTING_TYPES[name]
        try:
            checked[name] = _coerce(value, hint)
        except _Mismatch:
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            expected = _type_name(hint) + (" (an int is fine)" if hint is float else "")
            raise DvisError(f"{source}: {name} = {shown}: expected {expected}, got {type(value).__name__}") from None
    return checked


def check_names(names: list[str] | tuple[str, ...], source: str) -> None:
    """Raise :class:`DvisError` for the first name that is not a setting, suggesting the closest."""
    for name in names:
        if name not in SETTING_NAMES:
            close = suggestions(name, SETTING_NAMES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise DvisError(f"{source}: unknown setting '{name}'{hint}")


def read_local(path: str | Path) -> dict[str, Any]:
    """Settings assigned in a ``settings_local.py`` file (imports, functions and classes are ignored)."""
    path = Path(path)
    try:
        namespace = runpy.run_path(str(path))
    except Exception as exc:  # a broken user file must be reported as one line
        raise DvisError(f"{path}: {type(exc).__name__}: {exc}") from exc
    values = {k: v for k, v in namespace.items()
              if not k.startswith("_") and not isinstance(v, (types.ModuleType, types.FunctionType, type))}
    check_names(list(values), str(path))
    return values


def load_settings(local: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, updated by the ``local`` settings file when it exists, then by ``overrides`` (CLI)."""
    values: dict[str, Any] = {}
    if local is not None and Path(local).is_file():
        values.update(check_types(read_local(local), str(local)))
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_names(list(overrides), "command line")
    values.update(check_types(overrides, "command line"))
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Check cross-field consistency that would otherwise fail later inside the window loop."""
    missing = {"input", "aux", "back", "control", "layers", "unit_images", "status"} - set(s.layout)
    if missing:
        raise DvisError(f"layout lacks panes: {', '.join(sorted(missing))}")
    if s.global_scale <= 0 or s.font_scale <= 0:
        raise DvisError("global_scale and font_scale must be positive")
    if not isinstance(s.all_layers_budget, (int, float)) or not s.all_layers_budget >= 0:
        raise DvisError(f"all_layers_budget must be a number >= 0, got {s.all_layers_budget!r}")
    for mode, filt in s.back_presets:
        if mode not in s.back_modes or filt not in s.back_filters:
            raise DvisError(f"back_presets entry ({mode!r}, {filt!r}) is not in back_modes/back_filters")
