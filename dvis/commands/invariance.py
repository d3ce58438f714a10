"""``dvis invariance``: translation, scale and rotation sweeps (ZF Fig. 5)."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.constants import TRANSFORMS

#: Transformed copies of the first image shown per transform in the figure.
EXAMPLES = 9


def register(subparsers) -> None:
    p = subparsers.add_parser("invariance", help="feature distance and true-class probability under translation, scale, rotation (ZF Fig. 5)")
    a.add_experiment_args(p, "dvis-invariance")
    a.add_images(p, "image files, folders, list files or tars, comma-separated", many=True)
    a.add_layers(p, "all but the output layer")
    p.add_argument("--transforms", action=a.ListAction, choices=list(TRANSFORMS), default=list(TRANSFORMS),
                   metavar="TRANSFORMS", help=f"comma-separated among {', '.join(TRANSFORMS)} (default: all)")
    p.add_argument("--target", default=None, help="true class for all images (default: the class in each file name, else the top class)")
    p.add_argument("--no-rectify", action="store_true", help="compare raw layer outputs instead of rectified ones")
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.analyses.invariance import default_amounts, invariance_sweep, plot_invariance, transform_examples
    from dvis.analyses.io import auto_targets, load_inputs, save_figure, write_json
    from dvis.engine.layers import default_layers

    model = a.load_model_from(args)
    x, _, paths = load_inputs(model, args.images)
    layers = a.parse_layers(args.layers, model) or default_layers(model)[:-1]
    targets = auto_targets(paths, model.labels, args.target)
    sweeps, examples = [], {}
    for kind in args.transforms:
        amounts = default_amounts(kind, model.input_size[0])
        sweeps.append(invariance_sweep(model, x, layers, kind, amounts, targets, not args.no_rectify,
                                       args.batch_size, progress=True))
        examples[kind] = transform_examples(model, x[:1], kind, amounts, EXAMPLES)
    out = Path(args.out)
    save_figure(plot_invariance(sweeps, examples, model.labels), out / "invariance.png")
    write_json(out / "invariance.json", {"images": paths, "layers": layers, "sweeps": [s.summary() for s in sweeps]})
    for s in sweeps:
        far = {k: f"{float(v.mean()):.2f}" for k, v in s.distances.items()}
        print(f"{s.kind}: mean normalized distance {far}; mean p(true) {float(s.probs.mean()):.2f}")
    print(f"wrote {out / 'invariance.png'} and {out / 'invariance.json'}")
    return 0
