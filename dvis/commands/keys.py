"""``dvis keys``: open a small window and print what each pressed key decodes to."""
from __future__ import annotations

import argparse

from dvis.commands import args as a
from dvis.errors import DvisError


def register(subparsers) -> None:
    p = subparsers.add_parser("keys", help="show how this OpenCV build reports key presses",
                              description="Open a small window and print the raw cv2.waitKeyEx code of each "
                                          "key pressed there, its decoded name and the toolbox action bound "
                                          "to it. Press q (or close the window) to quit.")
    p.add_argument("--count", type=a.NON_NEGATIVE, default=0, help="stop after this many keys (0: until q)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from dvis.toolbox.bindings import key_map
    from dvis.toolbox.keys import decode, is_modifier
    from dvis.commands.apps import has_display
    from dvis.toolbox.settings import Settings

    if not has_display():
        raise DvisError("no display (DISPLAY is not set): dvis keys needs a window")
    actions = key_map(Settings().key_bindings)
    title = "dvis keys"
    img = np.zeros((120, 420, 3), np.uint8)
    cv2.putText(img, "press keys here; q quits", (10, 65), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (230, 230, 230), 1,
                cv2.LINE_AA)
    cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
    cv2.imshow(title, img)
    seen = 0
    try:
        while cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) >= 1:
            code = cv2.waitKeyEx(50)
            name = decode(code)
            if name is None and (code in (-1, 255) or is_modifier(code)):
                continue
            print(f"code {code:>9} (0x{code & 0xFFFFFFFF:08x}) -> {name or 'unknown'}"
                  f"{' -> ' + actions[name] if name in actions else ''}", flush=True)
            seen += 1
            if name == "q" or (args.count and seen >= args.count):
                break
    finally:
        cv2.destroyAllWindows()
    return 0
