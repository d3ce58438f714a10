"""Decode ``cv2.waitKeyEx`` codes into key names across OpenCV builds and platforms.

Names are single printable characters (``"a"``, ``"T"``, ``"8"``) or one of :data:`SPECIAL_NAMES`.
"""
from __future__ import annotations

SPECIAL_NAMES = ("left", "right", "up", "down", "pageup", "pagedown", "home", "end",
                 "esc", "enter", "tab", "backspace", "delete", "space")

# X11 keysyms: GTK and Qt backends on Linux (Qt reports nativeVirtualKey, i.e. the keysym).
_X11 = {0xFF51: "left", 0xFF52: "up", 0xFF53: "right", 0xFF54: "down",
        0xFF55: "pageup", 0xFF56: "pagedown", 0xFF50: "home", 0xFF57: "end",
        0xFF96: "left", 0xFF97: "up", 0xFF98: "right", 0xFF99: "down",  # keypad without NumLock
        0xFF9A: "pageup", 0xFF9B: "pagedown", 0xFF95: "home", 0xFF9C: "end",
        0xFF1B: "esc", 0xFF0D: "enter", 0xFF8D: "enter", 0xFF09: "tab", 0xFF08: "backspace",
        0xFFFF: "delete"}
# macOS Cocoa backend: NSUpArrowFunctionKey etc.
_MAC = {63232: "up", 63233: "down", 63234: "left", 63235: "right",
        63276: "pageup", 63277: "pagedown", 63273: "home", 63275: "end", 63272: "delete"}
# Windows: the virtual-key code in the high 16 bits, zero low bits.
_WIN = {0x25: "left", 0x26: "up", 0x27: "right", 0x28: "down",
        0x21: "pageup", 0x22: "pagedown", 0x24: "home", 0x23: "end", 0x2E: "delete"}
_ASCII = {27: "esc", 13: "enter", 10: "enter", 9: "tab", 8: "backspace", 127: "delete", 32: "space"}

#: Codes meaning "no key": -1 from waitKeyEx, 255 from builds that mask -1 with 0xFF.
NO_KEY = (-1, 255)


def decode(code: int | None) -> str | None:
    """Key name for a ``waitKeyEx`` code, or None for "no key" and unknown codes."""
    if code is None or code in NO_KEY or code <= 0:
        return None
    low, high = code & 0xFFFF, code >> 16
    if low == 0:
        return _WIN.get(high)
    if is_modifier(code):
        return None
    # GTK puts modifier state in the high bits; the key itself is in the low 16 bits.
    if low in _X11:
        return _X11[low]
    if low in _MAC:
        return _MAC[low]
    if low in _ASCII:
        return _ASCII[low]
    if 32 < low < 127:
        return chr(low)
    return None


def is_modifier(code: int) -> bool:
    """True for a lone modifier press (Shift, Ctrl, Alt, ...), which some backends report as a key."""
    return 0xFFE1 <= (code & 0xFFFF) <= 0xFFEE or (code & 0xFFFF) in (0xFE03, 0xFF7E)


def is_key_name(name: str) -> bool:
    """True for names :func:`decode` can produce."""
    return name in SPECIAL_NAMES or (len(name) == 1 and 32 < ord(name) < 127)
