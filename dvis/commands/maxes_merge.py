"""``dvis maxes-merge``: join the shard results of ``dvis maxes --shard`` into one run."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.errors import DvisError


def register(sub) -> None:
    p = sub.add_parser("maxes-merge", help="merge `dvis maxes --shard` results into one run",
                       description="Merge RUN/shards/*.npz (and any extra shard files given) into RUN.")
    a.add_run(p, "the run folder the shards were written to", required=False)
    p.add_argument("shards", nargs="*", help="extra shard .npz files (e.g. from other machines)")
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.formats.maxes import merge_shards
    from dvis.pipeline.maxes_run import summary

    shards = list(args.shards)
    if args.run is None:  # the older spelling: the run folder as the first positional
        if not shards:
            raise DvisError("give --run-dir, the run folder the shards were written to")
        a.warn_deprecated("dvis maxes-merge", "the run folder as a positional", f"--run-dir {shards[0]}")
        args.run = shards.pop(0)
    print(summary(merge_shards(args.run, shards), Path(args.run)))
    return 0
