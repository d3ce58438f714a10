"""The key bindings table: actions, their help text, and the key -> action map built from settings."""
from __future__ import annotations

from dvis.errors import DvisError
from dvis.toolbox.keys import is_key_name

#: Every action the toolbox knows, with the help line shown in the overlay (in display order).
ACTION_HELP: dict[str, str] = {
    "sel_up": "move selection up (from the top row: to the layer list)",
    "sel_down": "move selection down (from the layer list: into the tiles)",
    "sel_left": "move selection left / previous layer on the layer list",
    "sel_right": "move selection right / next layer on the layer list",
    "sel_up_fast": "move selection up 3",
    "sel_down_fast": "move selection down 3",
    "sel_left_fast": "move selection left 3",
    "sel_right_fast": "move selection right 3",
    "prev_layer": "previous layer, keep the cursor",
    "next_layer": "next layer, keep the cursor",
    "cycle_back": "back-projection: off / grad raw / grad norm / deconv raw / guided raw",
    "back_mode": "back mode: grad / deconv / guided",
    "back_filter": "back filter: raw / gray / norm / normblur",
    "freeze_back": "freeze / unfreeze the back-projected unit",
    "toggle_diffs": "tiles show activations / back diffs",
    "zoom": "zoom: unit / back-projection / off",
    "pattern": "pattern mode: optimized images as tiles",
    "boost_indiv": "per-channel contrast boost",
    "boost_gamma": "gamma contrast boost",
    "toggle_top5": "top-5 labels on the input",
    "toggle_unit_images": "unit images pane on / off",
    "next_image": "next image",
    "prev_image": "previous image",
    "camera": "camera / files",
    "freeze_camera": "freeze / unfreeze the camera frame",
    "crop": "crop / stretch frames to the model input",
    "occlusion": "occlusion map overlay on the input",
    "next_checkpoint": "next training checkpoint (feature evolution)",
    "prev_checkpoint": "previous training checkpoint",
    "help": "this help",
    "reset": "reset the view",
    "quit": "quit",
    "screenshot": "save a PNG screenshot",
}


def key_map(bindings: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Key name -> action for a bindings table; unknown actions, bad key names and clashes are errors."""
    keymap: dict[str, str] = {}
    for action, keys in bindings.items():
        if action not in ACTION_HELP:
            raise DvisError(f"key_bindings: unknown action '{action}'")
        if isinstance(keys, str):
            keys = (keys,)
        for key in keys:
            if not is_key_name(key):
                raise DvisError(f"key_bindings: '{key}' (for {action}) is not a key name")
            if key in keymap:
                raise DvisError(f"key_bindings: '{key}' is bound to both {keymap[key]} and {action}")
            keymap[key] = action
    return keymap


def help_lines(bindings: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """(keys, help text) rows for the help overlay, in :data:`ACTION_HELP` order."""
    rows = []
    for action, text in ACTION_HELP.items():
        keys = bindings.get(action)
        if keys:
            keys = (keys,) if isinstance(keys, str) else keys
            rows.append((" ".join(keys), text))
    return rows
