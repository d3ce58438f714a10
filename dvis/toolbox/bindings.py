"""Key bindings: the key -> action map built from settings, and the help overlay rows (both from the
action table in :mod:`dvis.toolbox.actions`)."""
from __future__ import annotations

from dvis.errors import DvisError
from dvis.toolbox.actions import TABLE
from dvis.toolbox.keys import is_key_name

#: action -> help line, in display order (from the action table).
ACTION_HELP: dict[str, str] = {a.name: a.help for a in TABLE}


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
