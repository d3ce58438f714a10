"""Time dvis.engine.geometry.model_geometry (one traced forward for all layers) on torchvision classifiers.

    python bench/geometry.py                      # a dozen representative models
    python bench/geometry.py --models all         # every torchvision classification model
    python bench/geometry.py resnet50 vit_b_16    # just these

Random init (no download). Prints one row per model: build time (not counted), geometry time,
layers, layout counts, layers fed by a global op, layers that never run, and the
path that traced it (meta tensors, fake tensors or a real forward); ends with totals. Goal: <= 1 s for resnet50, <= 5 s for any model
on 2 cores.
"""
from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter

import torch
import torchvision

from dvis.engine.geometry import model_geometry, tracer

DEFAULT = ["resnet50", "efficientnet_b0", "densenet201", "convnext_tiny", "vit_b_16", "swin_t", "maxvit_t",
           "regnet_y_400mf", "mobilenet_v3_small", "googlenet", "inception_v3", "alexnet"]


def input_size(name: str) -> tuple[int, int]:
    """The default weights' crop size (224 where the weights give none)."""
    try:
        weights = torchvision.models.get_model_weights(name)
        crop = list(weights)[0].transforms().crop_size
        return (crop[0], crop[0]) if isinstance(crop, list) else (crop, crop)
    except (ValueError, AttributeError, IndexError):
        return 224, 224


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="torchvision model names (default: a representative dozen)")
    p.add_argument("--models", choices=["all"], help="every torchvision classification model")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = torchvision.models.list_models(module=torchvision.models) if args.models == "all" else args.names or DEFAULT
    paths = []
    original = tracer._run

    def spy(net, x, size, how, fake_mode):
        out = original(net, x, size, how, fake_mode)
        paths.append(how)  # the tier that succeeded: meta, fake or real
        return out

    tracer._run = spy
    print(f"{'model':<22} {'size':>7} {'build s':>8} {'geom s':>7} {'layers':>6}  layouts / global / not run / path")
    times = {}
    failed = []
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
            net = torchvision.models.get_model(name, weights=None, **kwargs).eval()
            built = time.perf_counter() - t0
        # A net built without weights has its own size where it fixes one (vit_h_14: 224, not SWAG's 518).
        size = (net.image_size,) * 2 if isinstance(getattr(net, "image_size", None), int) else input_size(name)
        paths.clear()
        t0 = time.perf_counter()
        try:
            geo = model_geometry(net, size)
        except Exception as err:  # noqa: BLE001 - the benchmark reports every failure and goes on
            failed.append(name)
            print(f"{name:<22} {size[0]:>7} {built:8.2f}  FAILED: {str(err).splitlines()[0][:100]}")
            continue
        dt = time.perf_counter() - t0
        times[name] = dt
        layouts = Counter(g.layout for g in geo.values() if g.runs)
        glob = sum(g.global_context for g in geo.values())
        not_run = sum(not g.runs for g in geo.values())
        path = paths[-1] if paths else "?"
        print(f"{name:<22} {size[0]:>7} {built:8.2f} {dt:7.2f} {len(geo):>6}  {dict(layouts)} / {glob} / {not_run} / {path}",
              flush=True)
        del net, geo
    if times:
        worst = max(times, key=times.get)
        print(f"\n{len(times)} models, {len(failed)} failed{' (' + ', '.join(failed) + ')' if failed else ''}; "
              f"geometry total {sum(times.values()):.1f} s, slowest {worst} {times[worst]:.2f} s")


if __name__ == "__main__":
    main()
