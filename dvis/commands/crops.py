"""``dvis crops``: receptive-field mosaics of each unit's top images and their back-projections."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.errors import DvisError


def register(sub) -> None:
    p = sub.add_parser("crops", help="crop top-k patches and back-projections into per-unit mosaics",
                       description="For each unit of a `dvis maxes` run, write a mosaic of its top patches "
                                   "and of their back-projections into the model's unit_vis folder.")
    a.add_model(p, help="override the model recorded in the run")
    a.add_device(p)
    a.add_run(p, "run folder written by `dvis maxes`")
    a.add_images(p, "override the image source recorded in the run (same images)", required=False)
    a.add_unit_vis_out(p)
    a.add_layers(p, "all layers of the run")
    a.add_crops_flags(p)
    a.add_batch_size(p, 64, "patches per forward/backward")
    a.add_workers(p)
    a.add_shard(p, "compute only shard I of N (the last shard to finish merges); or launch with torchrun")
    a.add_force(p, "recompute complete layers, and replace complete unit images made from another run")
    a.add_quiet(p)
    p.set_defaults(func=run, positional_run=True)  # `dvis crops RUN`: the older spelling of --run-dir


def run(args) -> int:
    from dvis.formats.maxes import load_manifest
    from dvis.pipeline.distributed import setup
    from dvis.pipeline.precompute import run_crops_step, unit_vis_root

    if args.run is None:
        raise DvisError("give --run-dir, the run folder written by `dvis maxes`")
    shard, device = setup(args.device, args.shard)
    manifest = load_manifest(args.run)
    model = a.load_model_from(args, device, spec=args.model if args.model is not None else manifest.get("model"))
    if model.name != manifest.get("model_name"):
        raise DvisError(f"{args.run} was computed with model {manifest.get('model_name')}, not {model.name}")
    root = unit_vis_root(model, args.out)
    mism = run_crops_step(model, Path(args.run), root, a.parse_layers(args.layers, model), args.modes,
                          args.batch_size, args.workers, args.images, args.force,
                          progress=not args.quiet and shard.main, shard=shard)
    total = sum(mism.values())
    if shard.files and not mism:
        print(f"crops: shard {shard.rank}/{shard.world} done; the last shard to finish writes the layers")
    elif shard.main or shard.files:
        print(f"crops: {len(mism)} layer(s) written to {root}, {total} activation mismatch(es)"
              + ("" if mism else " (all layers were already complete)"))
    shard.close()
    return 0
