"""The real window under Xvfb survives 3,000 random key presses and mouse clicks sent with xdotool,
then still answers 'q' with exit status 0 (the soak of the window driver; bench/soak.py does the
same for the headless core over 10,000 frames and watches memory)."""
from __future__ import annotations

import os
import random
import subprocess
import sys

from test_toolbox_window import REPO, find_window, x

#: X keysyms of every bound key but quit (q); camera, screenshot and help included.
KEYS = ["Left", "Right", "Up", "Down", "i", "j", "k", "l", "I", "J", "K", "L", "minus", "equal", "bracketleft",
        "bracketright", "u", "o", "b", "n", "m", "d", "a", "z", "s", "t", "T", "y", "8", "9", "e", "w", "Prior",
        "Next", "c", "f", "0", "x", "v", "V", "g", "h", "Escape", "p", "F1", "Tab", "space", "Return"]
EVENTS = 3000
CANVAS = (1500, 930)  # the default model's canvas at global_scale 1 (w, h)


def test_window_survives_random_keys_and_clicks_then_quits(display, tmp_path):
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb")
    proc = subprocess.Popen([sys.executable, str(REPO / "run_toolbox.py"), "--images", str(REPO / "input_images"),
                             "--set", f"screenshot_dir={tmp_path / 'shots'}"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        win = find_window(env, proc, "dvis toolbox")
        x(env, "xdotool", "windowfocus", "--sync", win, check=False)
        rng = random.Random(3)
        sent = 0
        while sent < EVENTS:
            # one xdotool call chains 100 events: keys and clicks at random canvas pixels
            cmd = ["xdotool"]
            for _ in range(min(100, EVENTS - sent)):
                if rng.random() < 0.2:
                    cmd += ["mousemove", "--window", win, str(rng.randrange(CANVAS[0])), str(rng.randrange(CANVAS[1])),
                            "click", rng.choice(["1", "1", "3", "4", "5"])]
                else:
                    cmd += ["key", "--window", win, "--delay", "5", rng.choice(KEYS)]
                sent += 1
            subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=True)
            assert proc.poll() is None, f"the window exited after {sent} events: {proc.stderr.read()[-3000:]}"
        x(env, "xdotool", "key", "--window", win, "Escape", "q")
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
