"""``dvis occlusion``: occlusion-sensitivity maps (ZF Fig. 7) for one or more images."""
from __future__ import annotations

from pathlib import Path

from dvis.analyses.common import conv_layers
from dvis.analyses.io import add_common_args, auto_targets, load_inputs, open_model, save_figure, write_json
from dvis.analyses.occlusion import occlusion_maps, plot_occlusion


def register(subparsers) -> None:
    p = subparsers.add_parser("occlusion", help="slide a grey square over the input and map class probability and a feature map (ZF Fig. 7)")
    add_common_args(p, "dvis-occlusion")
    p.add_argument("--images", "--image", dest="images", nargs="+", required=True,
                   help="image files, folders, list files or tars")
    p.add_argument("--size", type=int, default=8, help="occluder side in model-input pixels")
    p.add_argument("--stride", type=int, default=2, help="occluder step in model-input pixels")
    p.add_argument("--layer", default=None, help="layer whose feature map is tracked (default: the last conv layer)")
    p.add_argument("--unit", type=int, default=None, help="channel of --layer (default: the strongest on the unoccluded image)")
    p.add_argument("--target", default=None, help="class name or index to map (default: the class in the file name, else the top class)")
    p.set_defaults(func=run)


def run(args) -> int:
    model = open_model(args)
    x, pixels, paths = load_inputs(model, args.images)
    layer = args.layer or conv_layers(model)[-1]
    targets = auto_targets(paths, model.labels, args.target)
    out = Path(args.out)
    numbers = {}
    for i, path in enumerate(paths):
        maps = occlusion_maps(model, x[i:i + 1], args.size, args.stride, targets[i], layer, args.unit,
                              batch_size=args.batch_size, progress=True)
        stem = Path(path).stem
        save_figure(plot_occlusion(pixels[i], maps, model.labels), out / f"occlusion-{stem}.png")
        numbers[path] = maps.summary(model.labels)
        print(f"{stem}: p({numbers[path]['target_label']}) {numbers[path]['base_target_prob']:.3f} unoccluded, "
              f"min {numbers[path]['min_target_prob']:.3f} occluded")
    write_json(out / "occlusion.json", numbers)
    print(f"wrote {len(paths)} figure(s) and {out / 'occlusion.json'}")
    return 0
