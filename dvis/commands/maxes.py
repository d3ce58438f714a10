"""``dvis maxes``: the top-k images of every unit over a dataset (a resumable, shardable run)."""
from __future__ import annotations

from dvis.commands import args as a
from dvis.errors import DvisError


def register(sub) -> None:
    p = sub.add_parser("maxes", help="find the top-k dataset images of every unit",
                       description="Track, for every unit of the chosen layers, the k images that excite it most. "
                                   "Resumable; shards with --shard i/N or torchrun.")
    a.add_model(p)
    a.add_device(p)
    a.add_images(p, "image folder (recursive), list file, or .tar/.tar.gz")
    a.add_run(p, "run folder to write", old=("--out",))
    a.add_layers(p, "the model's layers")
    a.add_batch_size(p, 64, "images per forward pass")
    a.add_workers(p)
    a.add_maxes_flags(p)
    a.add_shard(p, "process only shard I of N (merge with `dvis maxes-merge`)")
    a.add_force(p, "recompute even if the run folder is complete")
    a.add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.pipeline.distributed import setup
    from dvis.pipeline.maxes_run import maxes_run

    if args.run is None:
        raise DvisError("give --run-dir, the run folder to write")
    dist, device = setup(args.device, args.shard)
    model = a.load_model_from(args, device)
    cfg = a.track_config(args, model.device, progress=not args.quiet and dist.rank == 0)
    maxes_run(model, args.model, args.images, args.run, a.parse_layers(args.layers, model), cfg, args.labels,
              dist, sharded=args.shard is not None, force=args.force)
    return 0
