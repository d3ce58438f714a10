"""``dvis occlusion``: occlusion-sensitivity maps (ZF Fig. 7) for one or more images."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.errors import DvisError


def register(subparsers) -> None:
    p = subparsers.add_parser("occlusion", help="slide a grey square over the input and map class probability and a feature map (ZF Fig. 7)")
    a.add_experiment_args(p, "dvis-occlusion")
    a.add_images(p, "image files, folders, list files or tars, comma-separated", many=True, old=("--image",))
    p.add_argument("--size", type=a.POSITIVE, default=8, help="occluder side in model-input pixels (default: 8)")
    p.add_argument("--stride", type=a.POSITIVE, default=2, help="occluder step in model-input pixels (default: 2)")
    a.add_layers(p, "the last conv layer; its feature map is tracked", one=True, old=("--layer",))
    p.add_argument("--unit", type=int, default=None, help="channel of --layers (default: the strongest on the unoccluded image)")
    p.add_argument("--target", default=None, help="class name or index to map (default: the class in the file name, else the top class)")
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.analyses.common import conv_layers
    from dvis.analyses.io import auto_targets, load_inputs, save_figure, write_json
    from dvis.analyses.occlusion import occlusion_maps, plot_occlusion

    if not args.images:
        raise DvisError("give --images: the images to occlude")
    layer = a.one_layer(args.layers)
    model = a.load_model_from(args)
    x, pixels, paths = load_inputs(model, args.images)
    layer = layer or conv_layers(model)[-1]
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
