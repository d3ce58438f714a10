"""``dvis invariance``: translation, scale and rotation sweeps (ZF Fig. 5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dvis.analyses.invariance import TRANSFORMS, affine_thetas, default_amounts, invariance_sweep, plot_invariance, transform_images
from dvis.analyses.io import add_common_args, auto_targets, load_inputs, open_model, save_figure, write_json
from dvis.cli import add_layers_argument, parse_layers
from dvis.engine.layers import default_layers
from dvis.render.tiling import tile

#: Transformed copies of the first image shown per transform in the figure.
EXAMPLES = 9


def register(subparsers) -> None:
    p = subparsers.add_parser("invariance", help="feature distance and true-class probability under translation, scale, rotation (ZF Fig. 5)")
    add_common_args(p, "dvis-invariance")
    p.add_argument("--images", nargs="+", required=True, help="image files, folders or list files")
    add_layers_argument(p, "all but the output layer")
    p.add_argument("--transforms", nargs="+", choices=list(TRANSFORMS), default=list(TRANSFORMS))
    p.add_argument("--target", default=None, help="true class for all images (default: the class in each file name, else the top class)")
    p.add_argument("--no-rectify", action="store_true", help="compare raw layer outputs instead of rectified ones")
    p.set_defaults(func=run)


def run(args) -> int:
    model = open_model(args)
    x, _, paths = load_inputs(model, args.images)
    layers = parse_layers(args.layers, model) or default_layers(model)[:-1]
    targets = auto_targets(paths, model.labels, args.target)
    sweeps, examples = [], {}
    for kind in args.transforms:
        amounts = default_amounts(kind, model.input_size[0])
        sweeps.append(invariance_sweep(model, x, layers, kind, amounts, targets, not args.no_rectify,
                                       args.batch_size, progress=True))
        shown = np.unique(np.linspace(0, len(amounts) - 1, EXAMPLES).round().astype(int))
        copies = transform_images(x[:1].expand(len(shown), -1, -1, -1), affine_thetas(kind, [amounts[i] for i in shown], *x.shape[-2:]))
        examples[kind] = tile(np.stack([model.deprocess(c) for c in copies]), rows=1, sep=2, sep_value=255)
    out = Path(args.out)
    save_figure(plot_invariance(sweeps, examples, model.labels), out / "invariance.png")
    write_json(out / "invariance.json", {"images": paths, "layers": layers, "sweeps": [s.summary() for s in sweeps]})
    for s in sweeps:
        far = {k: f"{float(v.mean()):.2f}" for k, v in s.distances.items()}
        print(f"{s.kind}: mean normalized distance {far}; mean p(true) {float(s.probs.mean()):.2f}")
    print(f"wrote {out / 'invariance.png'} and {out / 'invariance.json'}")
    return 0
