"""``dvis precompute``: maxes, crops and optimize in order, skipping what is already complete."""
from __future__ import annotations

import shlex

from dvis.commands import args as a

STEPS = ("maxes", "crops", "optimize")


def register(sub) -> None:
    p = sub.add_parser("precompute", help="fill a model's unit images: maxes, crops, optimize",
                       description="Run `maxes`, `crops` and `optimize` in order for a model and an image "
                                   "source, skipping steps and layers that are already complete. Each step "
                                   "takes its own flags, as the step's command does.")
    a.add_model(p)
    a.add_device(p)
    a.add_images(p, "image folder, list file, or .tar/.tar.gz")
    a.add_run(p, "maxes run folder (default: <unit_vis>/maxes)")
    a.add_unit_vis_out(p)
    a.add_layers(p, "the model's layers")
    a.add_batch_size(p, 64, "images (maxes) and patches (crops) per batch")
    a.add_workers(p)
    p.add_argument("--skip", type=a.choice_list(STEPS), default=[], metavar="STEPS",
                   help=f"comma-separated steps to skip: {', '.join(STEPS)}")
    a.add_shard(p, "compute only shard I of N of crops and optimize (the last shard to finish merges; the "
                   "maxes run must be complete), or launch with torchrun for all three steps")
    a.add_force(p, "recompute everything, replacing complete unit images made from other runs or settings")
    a.add_quiet(p)
    a.add_maxes_flags(p.add_argument_group("maxes step (as dvis maxes)"))
    a.add_crops_flags(p.add_argument_group("crops step (as dvis crops)"))
    a.add_optimize_flags(p.add_argument_group("optimize step (as dvis optimize)"))
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.pipeline.distributed import setup
    from dvis.pipeline.precompute import precompute

    shard, device = setup(args.device, args.shard)  # torchrun: all three steps in one launch, rank 0 writes
    model = a.load_model_from(args, device)
    track = a.track_config(args, model.device, progress=not args.quiet and shard.main)
    root = precompute(model, args.images, args.out, args.run, a.parse_layers(args.layers, model), track,
                      tuple(args.modes), a.opt_settings(args), tuple(args.skip), args.force, args.model, shard,
                      args.labels)
    if shard.main:
        print(f"precompute: unit images of {model.name} in {root}; check with `{vis_info_line(args)}`")
    shard.close()
    return 0


def vis_info_line(args) -> str:
    """The ``dvis vis-info`` command that reports what this precompute wrote."""
    words = ["dvis", "vis-info"] + ([args.model] if args.model else [])
    if args.weights:
        words += ["--weights", args.weights]
    if args.out:
        words += ["--unit-vis", args.out]
    return shlex.join(words)
