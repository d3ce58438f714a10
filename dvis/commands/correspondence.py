"""``dvis correspondence``: part-occlusion consistency across images (ZF Table 1)."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a


def register(subparsers) -> None:
    p = subparsers.add_parser("correspondence", help="consistency of feature changes when occluding the same part in several images (ZF Table 1)")
    a.add_experiment_args(p, "dvis-correspondence")
    p.add_argument("--spec", required=True, help="YAML file listing images and part boxes (see docs/analyses.md)")
    a.add_layers(p, "the spec's, else all but the output layer")
    p.add_argument("--random", type=a.NON_NEGATIVE, default=None, help="number of random box sets (default: the spec's, else 5)")
    p.add_argument("--seed", type=int, default=None, help="seed for the random boxes (default: the spec's, else 0)")
    p.add_argument("--no-rectify", action="store_true", help="compare raw layer outputs instead of rectified ones")
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.analyses.correspondence import correspondence, load_spec, part_boxes, plot_correspondence
    from dvis.analyses.io import load_inputs, save_figure, write_json
    from dvis.engine.layers import default_layers

    spec = load_spec(args.spec)
    model = a.load_model_from(args)
    x, pixels, paths = load_inputs(model, [str(p) for p in spec.paths])
    count = spec.random_count if args.random is None else args.random
    boxes, hw = part_boxes(spec, [Path(p).name for p in paths], model.input_size, count,
                           spec.seed if args.seed is None else args.seed)
    layers = a.parse_layers(args.layers, model) or spec.layers or default_layers(model)[:-1]
    table = correspondence(model, x, boxes, layers, rectify=not args.no_rectify, batch_size=args.batch_size, progress=True)
    out = Path(args.out)
    save_figure(plot_correspondence(pixels, boxes, table), out / "correspondence.png")
    write_json(out / "correspondence.json", {
        "images": paths, "layers": layers, "random_box_hw": hw, "random_sets": count,
        "boxes": boxes,
        "delta": {p: {k: {"mean": m, "std": s} for k, (m, s) in row.items()} for p, row in table.items()},
    })
    print("Delta (mean) per part: " + "  ".join(layers))
    for p, row in table.items():
        print(f"  {p:>12}: " + "  ".join(f"{row[k][0]:.3f}" for k in layers))
    print(f"wrote {out / 'correspondence.png'} and {out / 'correspondence.json'}")
    return 0
