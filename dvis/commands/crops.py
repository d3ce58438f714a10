"""``dvis crops``: receptive-field mosaics of each unit's top images and their back-projections."""
from __future__ import annotations

from pathlib import Path

from dvis.cli import add_layers_argument, add_model_argument, default_workers, parse_layers, parse_list
from dvis.errors import DvisError


def register(sub) -> None:
    p = sub.add_parser("crops", help="crop top-k patches and back-projections into per-unit mosaics",
                       description="For each unit of a `dvis maxes` run, write a mosaic of its top patches "
                                   "and of their back-projections into the model's unit_vis folder.")
    p.add_argument("run", help="run folder written by `dvis maxes`")
    add_model_argument(p, help="override the model recorded in the run")
    p.add_argument("--images", default=None, help="override the image source recorded in the run (same images)")
    p.add_argument("--out", default=None, help="unit_vis folder (default: the model's)")
    p.add_argument("--modes", default="deconv", help="comma-separated back-projections: deconv, guided, grad")
    add_layers_argument(p, "all layers of the run")
    p.add_argument("--batch-size", type=int, default=64, help="patches per forward/backward")
    p.add_argument("--workers", type=int, default=default_workers(), help="DataLoader decoding workers")
    p.add_argument("--device", default="cpu")
    p.add_argument("--shard", help="i/N: compute only shard i of N (the last shard to finish merges); "
                                   "or launch with torchrun")
    p.add_argument("--force", action="store_true",
                   help="recompute complete layers, and replace complete unit images made from another run")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.formats.maxes import load_manifest
    from dvis.models.loading import load_model
    from dvis.pipeline.distributed import setup
    from dvis.pipeline.precompute import run_crops_step, unit_vis_root

    shard, device = setup(args.device, args.shard)
    manifest = load_manifest(args.run)
    model = load_model(args.model if args.model is not None else manifest.get("model"), device=device)
    if model.name != manifest.get("model_name"):
        raise DvisError(f"{args.run} was computed with model {manifest.get('model_name')}, not {model.name}")
    modes = parse_list(args.modes)
    root = unit_vis_root(model, args.out)
    mism = run_crops_step(model, Path(args.run), root, parse_layers(args.layers, model), modes, args.batch_size,
                          args.workers, args.images, args.force, progress=not args.quiet and shard.main, shard=shard)
    total = sum(mism.values())
    if shard.files and not mism:
        print(f"crops: shard {shard.rank}/{shard.world} done; the last shard to finish writes the layers")
    elif shard.main or shard.files:
        print(f"crops: {len(mism)} layer(s) written to {root}, {total} activation mismatch(es)"
              + ("" if mism else " (all layers were already complete)"))
    shard.close()
    return 0
