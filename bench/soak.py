"""Soak: drive the headless toolbox through many frames of random keys and watch its memory.

    python bench/soak.py [--frames 10000] [--model zf-cifar10] [--images DIR] [--settle-every 4]

Each frame presses one random key (layer and selection moves, ``b``/``n``/``m`` through every
back-projection mode and filter, next/previous image, checkpoints ``v``/``V``, zoom, pattern mode,
occlusion, diffs, boosts, help, reset) or clicks a random canvas pixel, updates and renders; every
``--settle-every`` frames it waits for the workers, so every computation really runs. It prints the
process RSS every 1,000 frames (with what the bounded caches hold then: unit images and decoded
sprites in bytes, the renderer's tile maps in entries) and, at the end, the growth after the first
1,000 frames (goal: <= 5 %) and the number of key failures the app reported (goal: 0).
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dvis.formats import unit_vis  # noqa: E402
from dvis.models.loading import load_model  # noqa: E402
from dvis.toolbox.app import Toolbox  # noqa: E402
from dvis.commands.apps import parse_set  # noqa: E402
from dvis.toolbox.render import tile_maps  # noqa: E402
from dvis.toolbox.settings import load_settings  # noqa: E402

#: Keys and their weights: mostly moves and view changes, every mode of b/n/m, checkpoints, images.
KEYS = {
    "up": 3, "down": 3, "left": 3, "right": 3, "I": 1, "K": 1, "J": 1, "L": 1, "u": 3, "o": 3,
    "b": 4, "n": 2, "m": 2, "d": 1, "a": 1, "z": 2, "s": 2, "t": 1, "T": 1, "8": 1, "9": 1,
    "e": 3, "w": 2, "0": 1, "x": 2, "v": 2, "V": 1, "h": 1, "esc": 1, "click": 3,
}


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class Failures(logging.Handler):
    """Counts the exceptions the app logs (a key that failed, a worker error)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.count, self.first = 0, None

    def emit(self, record):
        self.count += 1
        self.first = self.first or record.getMessage()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--model", default=None)
    ap.add_argument("--images", default=None, help="image folder (default: the settings' input_images)")
    ap.add_argument("--settle-every", type=int, default=4, help="wait for the workers every N frames")
    ap.add_argument("--every", type=int, default=1000, help="print RSS every N frames")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a toolbox setting, e.g. --set unit_cache_bytes=33554432")
    args = ap.parse_args()

    failures = Failures()
    logging.getLogger("dvis").addHandler(failures)
    overrides = {"model": args.model}
    if args.images:
        overrides["images"] = args.images
    overrides.update(parse_set(args.set))
    settings = load_settings(None, overrides)
    from dvis.formats.paths import packaged_data_dir

    if not Path(settings.images).exists():
        settings.images = str(packaged_data_dir() / settings.images)
    model = load_model(settings.model, settings.device)
    tb = Toolbox(model, settings, headless=True)
    rng = random.Random(args.seed)
    keys, weights = list(KEYS), list(KEYS.values())
    rss = []
    t0 = time.monotonic()
    try:
        tb.settle()
        h, w = tb.render().shape[:2]
        for frame in range(1, args.frames + 1):
            key = rng.choices(keys, weights)[0]
            if key == "click":
                tb.click(rng.randrange(w), rng.randrange(h))
            else:
                tb.press(key)
            if frame % args.settle_every == 0:
                tb.settle()
            else:
                tb.update()
            tb.render()
            tb.tick()
            if frame % args.every == 0:
                rss.append(rss_bytes())
                print(f"frame {frame:>6}: RSS {rss[-1] / 2**20:7.1f} MiB  ({time.monotonic() - t0:6.0f} s, "
                      f"layer {tb.state.layer}, {failures.count} failures; bounded caches: unit images "
                      f"{tb.loader._cache.bytes / 2**20:.0f} MiB, sprites {unit_vis._sprites.bytes() / 2**20:.0f} MiB, "
                      f"tile maps {tile_maps.cache_info().currsize})",
                      flush=True)
    finally:
        tb.close()
    if len(rss) >= 2:
        growth = (max(rss[1:]) - rss[0]) / rss[0]
        print(f"RSS after frame {args.every}: {rss[0] / 2**20:.1f} MiB, peak later: {max(rss[1:]) / 2**20:.1f} MiB, "
              f"final: {rss[-1] / 2**20:.1f} MiB; growth {100 * growth:+.1f}% (goal <= 5%)")
    print(f"failures: {failures.count}" + (f" (first: {failures.first})" if failures.first else "") + " (goal 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
