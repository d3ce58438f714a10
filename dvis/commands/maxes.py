"""``dvis maxes`` (top-k images per unit over a dataset) and ``dvis maxes-merge`` (join shard results)."""
from __future__ import annotations

import os
from pathlib import Path

from dvis.errors import DvisError


def default_workers() -> int:
    """Decoding workers: two, or fewer when this process may use fewer CPU cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(t) for t in text.split("/"))
    except ValueError:
        raise DvisError(f"--shard expects i/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise DvisError(f"--shard {text}: need 0 <= i < N")
    return i, n


def parse_layers(text: str | None) -> list[str] | None:
    return [s for s in text.replace(" ", ",").split(",") if s] if text else None


def register(sub) -> None:
    p = sub.add_parser("maxes", help="find the top-k dataset images of every unit",
                       description="Track, for every unit of the chosen layers, the k images that excite it most. "
                                   "Resumable; shards with --shard i/N or torchrun.")
    p.add_argument("--model", default=None, help="anything dvis.load_model accepts (default: zf-cifar10)")
    p.add_argument("--images", required=True, help="image folder (recursive), list file, or .tar/.tar.gz")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--top", type=int, default=9)
    p.add_argument("--layers", help="comma-separated layer names (default: the model's layers)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=default_workers(), help="DataLoader decoding workers")
    p.add_argument("--device", default="cpu")
    p.add_argument("--shard", help="i/N: process only shard i of N (merge with `dvis maxes-merge`)")
    p.add_argument("--checkpoint-every", type=float, default=30.0, help="seconds between checkpoints")
    p.add_argument("--force", action="store_true", help="recompute even if the run folder is complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--bottom-k", type=int, default=0, help="also keep each unit's K least-activating images")
    p.add_argument("--labels", help="labels file (lines '<image name> <class>'); default: class folders")
    p.add_argument("--no-stats", action="store_true", help="skip the unit statistics (stats.npz, see docs/atlas.md)")
    p.set_defaults(func=run_maxes)

    m = sub.add_parser("maxes-merge", help="merge `dvis maxes --shard` results into one run",
                       description="Merge RUN/shards/*.npz (and any extra shard files given) into RUN.")
    m.add_argument("run")
    m.add_argument("shards", nargs="*", help="extra shard .npz files (e.g. from other machines)")
    m.set_defaults(func=run_merge)


def _distributed(device: str) -> tuple[int, int, str]:
    """Join the torchrun process group if launched by torchrun; returns (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), world, device


def _gather(result, world: int, device) -> list:
    """All ranks' results (same layers and shapes, so plain tensor all_gather works)."""
    import torch
    import torch.distributed as dist

    from dvis.maxes_run import MaxResult

    parts = [MaxResult(result.layers, result.shapes, result.top, {}, {}, {}, result.n_images) for _ in range(world)]
    for n in result.layers:
        for attr in ("values", "index", "pos"):
            t = torch.from_numpy(getattr(result, attr)[n]).to(device)
            out = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(out, t)
            for part, o in zip(parts, out):
                getattr(part, attr)[n] = o.cpu().numpy()
    skipped = [None] * world
    dist.all_gather_object(skipped, result.skipped)
    for part, s in zip(parts, skipped):
        part.skipped = s
    if result.stats is not None:  # unit statistics: same keys and shapes on every rank
        from dvis.unit_stats import StatsArrays

        gathered = [{} for _ in range(world)]
        for k in sorted(result.stats.arrays):
            t = torch.from_numpy(result.stats.arrays[k]).to(device)
            out = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(out, t)
            for g, o in zip(gathered, out):
                g[k] = o.cpu().numpy()
        for part, g in zip(parts, gathered):
            part.stats = StatsArrays(g, result.stats.classes, result.stats.labels, result.stats.bottom_k)
    return parts


def run_maxes(args) -> int:
    from dvis.datasets import open_source
    from dvis.maxes import TrackConfig, track_maxes
    from dvis.maxes_run import (build_manifest, checkpoint_path, fingerprint, is_complete, merge_results,
                                save_result, save_shard, shard_complete, shard_path)
    from dvis.model_loading import load_model
    from dvis.unit_stats import source_labels, stats_complete

    rank, world, device = _distributed(args.device)
    shard = (rank, world) if world > 1 else (parse_shard(args.shard) if args.shard else (0, 1))
    if world > 1 and args.shard:
        raise DvisError("use either torchrun or --shard, not both")
    model = load_model(args.model, device=device)
    source = open_source(args.images)
    layers = parse_layers(args.layers) or list(model.layers)
    out = Path(args.out)
    fp = fingerprint(model, source, layers, args.top, args.batch_size)
    sharded = args.shard is not None
    labels = None if args.no_stats else source_labels(source, args.labels, model.labels)
    stats_done = args.no_stats or sharded or stats_complete(out, fp, labels[0], args.bottom_k)
    if not args.force and (shard_complete(out, shard, fp) if sharded else is_complete(out, fp) and stats_done):
        if rank == 0:
            print(f"maxes: {shard_path(out, shard) if sharded else out} is already complete (use --force to recompute)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(out, shard)
    if args.force:
        ckpt.unlink(missing_ok=True)
    cfg = TrackConfig(top=args.top, batch_size=args.batch_size, workers=args.workers,
                      checkpoint_every=args.checkpoint_every, progress=not args.quiet and rank == 0,
                      stats=not args.no_stats, bottom_k=args.bottom_k)
    result = track_maxes(model, source, layers, cfg, shard=shard, checkpoint=ckpt, labels=labels)
    manifest = build_manifest(model, args.model, source, args.batch_size, fp)
    if sharded:
        final = save_shard(out, result, manifest, source.names, shard)
        print(f"maxes: shard {shard[0]}/{shard[1]} done -> {final}; run `dvis maxes-merge {out}` when all are done")
    else:
        if world > 1:
            import torch.distributed as dist
            result = merge_results(_gather(result, world, model.device))
            if rank == 0:
                save_result(result, out, manifest, source.names)
            dist.barrier()
            dist.destroy_process_group()
        else:
            save_result(result, out, manifest, source.names)
        if rank == 0:
            summary(result, out)
    ckpt.unlink(missing_ok=True)
    return 0


def summary(result, out: Path) -> None:
    """The closing line of a maxes run (images, skipped as unreadable, layers, units)."""
    units = sum(result.shapes[n][0] for n in result.layers)
    print(f"maxes: {result.n_images} images ({len(result.skipped)} skipped as unreadable), "
          f"{len(result.layers)} layers, {units} units, top {result.top} -> {out}")


def run_merge(args) -> int:
    from dvis.maxes_run import merge_shards

    summary(merge_shards(args.run, args.shards), Path(args.run))
    return 0
