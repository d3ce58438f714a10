"""``dvis precompute``: maxes, crops and optimize in order, skipping what is already complete."""
from __future__ import annotations

from dvis.cli import add_layers_argument, add_model_argument, default_workers, parse_layers, parse_list
from dvis.commands.optimize import add_opt_arguments, settings_from


def register(sub) -> None:
    p = sub.add_parser("precompute", help="fill a model's unit images: maxes, crops, optimize",
                       description="Run `maxes`, `crops` and `optimize` in order for a model and an image "
                                   "source, skipping steps and layers that are already complete.")
    add_model_argument(p)
    p.add_argument("--images", required=True, help="image folder, list file, or .tar/.tar.gz")
    p.add_argument("--out", default=None, help="unit_vis folder (default: the model's)")
    p.add_argument("--run", default=None, help="maxes run folder (default: <unit_vis>/maxes)")
    add_layers_argument(p, "the model's layers")
    p.add_argument("--top", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=64, help="images (maxes) and patches (crops) per batch")
    p.add_argument("--workers", type=int, default=default_workers(), help="DataLoader decoding workers")
    p.add_argument("--modes", default="deconv", help="back-projections for crops")
    p.add_argument("--skip", default="", help="comma-separated steps to skip: maxes, crops, optimize")
    p.add_argument("--device", default="cpu")
    p.add_argument("--decode", choices=("cpu", "gpu", "auto"), default="auto",
                   help="JPEG decoding for maxes: gpu = nvjpeg on the device (auto: gpu on a CUDA device)")
    p.add_argument("--force", action="store_true",
                   help="recompute everything, replacing complete unit images made from other runs or settings")
    p.add_argument("--quiet", action="store_true")
    add_opt_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.pipeline.maxes import TrackConfig
    from dvis.models.loading import load_model
    from dvis.imaging.decode import resolve
    from dvis.pipeline.distributed import setup
    from dvis.pipeline.precompute import precompute

    shard, device = setup(args.device)  # torchrun: all three steps in one launch, rank 0 writes
    model = load_model(args.model, device=device)
    track = TrackConfig(top=args.top, batch_size=args.batch_size, workers=args.workers,
                        progress=not args.quiet and shard.main, decode=resolve(args.decode, model.device))
    root = precompute(model, args.images, args.out, args.run, parse_layers(args.layers, model), track,
                      tuple(parse_list(args.modes)), settings_from(args), tuple(parse_list(args.skip)), args.force,
                      args.model, shard)
    if shard.main:
        print(f"precompute: unit images of {model.name} in {root}; check with `dvis vis-info`")
    shard.close()
    return 0
