"""Key decoding across OpenCV builds and the bindings table."""
import pytest

from dvis.errors import DvisError
from dvis.toolbox.bindings import ACTION_HELP, help_lines, key_map
from dvis.toolbox.keys import decode, is_key_name
from dvis.toolbox.settings import Settings
from dvis.toolbox.actions import ACTIONS


@pytest.mark.parametrize("code,name", [
    (0xFF51, "left"), (0xFF52, "up"), (0xFF53, "right"), (0xFF54, "down"),  # Linux GTK/Qt keysyms
    (0xFF55, "pageup"), (0xFF56, "pagedown"),  # Linux PageUp/PageDown (the original never mapped these)
    (0x10000 | 0xFF56, "pagedown"),  # GTK with a modifier bit in the high word
    (63232, "up"), (63233, "down"), (63234, "left"), (63235, "right"),  # macOS Cocoa
    (63276, "pageup"), (63277, "pagedown"),
    (0x250000, "left"), (0x260000, "up"), (0x270000, "right"), (0x280000, "down"),  # Windows
    (0x210000, "pageup"), (0x220000, "pagedown"),
    (ord("a"), "a"), (ord("T"), "T"), (ord("8"), "8"), (27, "esc"), (0xFF1B, "esc"), (32, "space"),
    (0x10000 | ord("L"), "L"),
])
def test_decode_platform_codes(code, name):
    assert decode(code) == name


@pytest.mark.parametrize("code", [-1, 255, None, 0, 0xFE03, 0x990000, 0xFFE1, 0xFFE3, 0xFFE9])
def test_decode_no_key_and_unknown(code):
    assert decode(code) is None


def test_every_decoded_name_is_a_key_name():
    for code in list(range(1, 0x10000)) + [0x250000, 0x220000]:
        name = decode(code)
        assert name is None or is_key_name(name)


def test_default_bindings_cover_every_action_and_issue_keys():
    bindings = Settings().key_bindings
    keymap = key_map(bindings)
    assert set(bindings) == set(ACTION_HELP) == set(ACTIONS)
    expected = {"left": "sel_left", "j": "sel_left", "i": "sel_up", "k": "sel_down", "l": "sel_right",
                "I": "sel_up_fast", "u": "prev_layer", "o": "next_layer", "b": "cycle_back", "n": "back_mode",
                "m": "back_filter", "d": "freeze_back", "a": "toggle_diffs", "z": "zoom", "s": "pattern",
                "t": "boost_indiv", "T": "boost_gamma", "8": "toggle_top5", "9": "toggle_unit_images",
                "e": "next_image", "pagedown": "next_image", "w": "prev_image", "pageup": "prev_image",
                "c": "camera", "f": "freeze_camera", "0": "crop", "h": "help", "esc": "reset", "q": "quit",
                "p": "screenshot"}
    assert {k: keymap[k] for k in expected} == expected


def test_every_shifted_binding_has_an_unshifted_alternate():
    # OpenCV's Qt backend reports Shift+letter as the lowercase letter (QTest::keyToAscii).
    for action, keys in Settings().key_bindings.items():
        assert any(not k.isupper() for k in keys), action


def test_key_map_rejects_clashes_unknown_actions_and_bad_names():
    with pytest.raises(DvisError, match="bound to both"):
        key_map({"quit": ("q",), "help": ("q",)})
    with pytest.raises(DvisError, match="unknown action 'jump'"):
        key_map({"jump": ("x",)})
    with pytest.raises(DvisError, match="not a key name"):
        key_map({"quit": ("ctrl+q",)})


def test_help_lines_follow_the_table():
    rows = help_lines({"quit": ("q", "esc"), "help": "h"})
    assert rows == [("h", ACTION_HELP["help"]), ("q esc", ACTION_HELP["quit"])]
