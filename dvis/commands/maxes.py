"""``dvis maxes`` (top-k images per unit over a dataset) and ``dvis maxes-merge`` (join shard results)."""
from __future__ import annotations

import json
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

    from dvis.maxes import MaxResult

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
    return parts


def run_maxes(args) -> int:
    import numpy as np

    from dvis.datasets import open_source
    from dvis.maxes import (TrackConfig, atomic_savez, fingerprint, merge_results, save_result, track_maxes,
                            weights_digest)
    from dvis.model_loading import load_model

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
    final = out / "shards" / f"{shard[0]}-of-{shard[1]}.npz" if sharded else out / "manifest.json"
    if not args.force and final.is_file() and _same_run(final, fp, sharded):
        if rank == 0:
            print(f"maxes: {final} is already complete (use --force to recompute)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    tag = f".{shard[0]}-of-{shard[1]}" if shard[1] > 1 else ""
    ckpt = out / f"checkpoint{tag}.npz"
    if args.force and ckpt.exists():
        ckpt.unlink()
    cfg = TrackConfig(top=args.top, batch_size=args.batch_size, workers=args.workers,
                      checkpoint_every=args.checkpoint_every, progress=not args.quiet and rank == 0)
    result = track_maxes(model, source, layers, cfg, shard=shard, checkpoint=ckpt)
    manifest = dict(model=args.model, model_name=model.name, input_size=list(model.input_size),
                    channels=model.channels, source=str(Path(args.images).resolve()), source_kind=source.kind,
                    batch_size=args.batch_size, weights=weights_digest(model.net), fingerprint=fp)
    if sharded:
        final.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(final, manifest=np.array(json.dumps(dict(manifest, shard=list(shard), layers=result.layers,
                                                                shapes={n: list(s) for n, s in result.shapes.items()},
                                                                top=result.top, n_images=result.n_images))),
                     skipped=np.array(result.skipped, dtype=np.int64),
                     **{f"{n}:{a}": getattr(result, a)[n] for n in result.layers for a in ("values", "index", "pos")})
        (out / "images.txt").write_text("".join(f"{s}\n" for s in source.names))
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
            _summary(result, out)
    ckpt.unlink(missing_ok=True)
    return 0


def _same_run(final: Path, fp: str, sharded: bool) -> bool:
    import numpy as np

    from dvis.maxes import load_manifest

    if sharded:
        with np.load(final, allow_pickle=False) as z:
            return json.loads(str(z["manifest"])).get("fingerprint") == fp
    try:
        return load_manifest(final.parent).get("fingerprint") == fp
    except DvisError:
        return False


def _summary(result, out: Path) -> None:
    units = sum(result.shapes[n][0] for n in result.layers)
    print(f"maxes: {result.n_images} images ({len(result.skipped)} skipped as unreadable), "
          f"{len(result.layers)} layers, {units} units, top {result.top} -> {out}")


def run_merge(args) -> int:
    import numpy as np

    from dvis.maxes import MaxResult, merge_results, save_result

    out = Path(args.run)
    files = sorted((out / "shards").glob("*-of-*.npz")) + [Path(s) for s in args.shards]
    if not files:
        raise DvisError(f"no shard files in {out / 'shards'}")
    results, manifests = [], []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            m = json.loads(str(z["manifest"]))
            layers, shapes = m["layers"], {n: tuple(s) for n, s in m["shapes"].items()}
            results.append(MaxResult(layers, shapes, m["top"], {n: z[f"{n}:values"] for n in layers},
                                     {n: z[f"{n}:index"] for n in layers}, {n: z[f"{n}:pos"] for n in layers},
                                     m["n_images"], z["skipped"].tolist()))
            manifests.append(m)
    fps = {m["fingerprint"] for m in manifests}
    if len(fps) != 1:
        raise DvisError("shards come from different commands (model, images, layers, top or batch size differ)")
    n = manifests[0]["shard"][1]
    have = sorted(m["shard"][0] for m in manifests)
    if len(set(have)) != len(have) or any(m["shard"][1] != n for m in manifests):
        raise DvisError(f"shard files overlap or disagree on N: {[str(f) for f in files]}")
    if have != list(range(n)):
        raise DvisError(f"missing shards: {sorted(set(range(n)) - set(have))} of {n}")
    result = merge_results(results)
    manifest = {k: v for k, v in manifests[0].items() if k not in ("shard", "layers", "shapes", "top", "n_images")}
    names = (out / "images.txt").read_text().splitlines()
    save_result(result, out, manifest, names)
    _summary(result, out)
    return 0
