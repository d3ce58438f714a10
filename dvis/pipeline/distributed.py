"""Splitting work across processes and gathering it back, for every pipeline step.

Two ways to run one job as N processes, with identical results to one process:

- **torchrun** (``torchrun --nproc_per_node=N -m dvis ...``): the processes join one
  ``torch.distributed`` group (NCCL on CUDA, gloo on CPU); each computes its share, rank 0 gathers
  the shares, merges and writes, the others wait at a barrier.
- **``--shard i/N``**: independent processes (other machines, a batch queue) with no group; each
  writes its share to a file and the step's merge joins the files.

Work is always dealt in the batches one process would use (batch ``b`` to process ``b % N``), so
every item is computed in the same batch as in a single-process run and floating-point results
are bit-identical however the work is split.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dvis.errors import DvisError


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(t) for t in text.split("/"))
    except ValueError:
        raise DvisError(f"--shard expects i/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise DvisError(f"--shard {text}: need 0 <= i < N")
    return i, n


def deal(batches: Sequence, rank: int, world: int) -> list:
    """The batches process ``rank`` of ``world`` computes: every ``world``-th, from ``rank``.
    Batch counts differ by at most one between processes."""
    return list(batches[rank::world])


def shard_batches(n_items: int, batch_size: int, shard: tuple[int, int]) -> list[list[int]]:
    """Item indices of shard ``i`` of ``n``'s batches, ``range(n_items)`` cut into ``batch_size``
    batches as one process would and dealt with :func:`deal`."""
    i, n = shard
    starts = range(i * batch_size, n_items, n * batch_size)
    return [list(range(s, min(s + batch_size, n_items))) for s in starts]


@dataclass(frozen=True)
class Shard:
    """This process's place in a job: ``rank`` of ``world``; ``group`` when the processes share a
    torch.distributed group (torchrun), else independent ``--shard`` processes (or one process)."""

    rank: int = 0
    world: int = 1
    group: bool = False

    @property
    def main(self) -> bool:
        """Whether this process writes shared outputs (rank 0, or the only process)."""
        return self.rank == 0

    @property
    def split(self) -> bool:
        return self.world > 1

    @property
    def files(self) -> bool:
        """Whether shares are joined through files (``--shard`` jobs) rather than the group."""
        return self.world > 1 and not self.group

    @property
    def tag(self) -> str:
        return f"{self.rank}-of-{self.world}"

    def mine(self, batches: Sequence) -> list:
        return deal(batches, self.rank, self.world)

    def gather(self, obj: Any) -> list | None:
        """Every rank's ``obj`` on rank 0 (rank order), None on the others; ``[obj]`` without a group."""
        if not self.group:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def agree(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank: decisions (skip a step, a layer) must be the same everywhere."""
        if not self.group:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def collect(self, part: dict[str, np.ndarray], folder: str | Path, name: str, key: Any
                ) -> list[dict[str, np.ndarray]] | None:
        """All processes' ``part`` (arrays of this process's share), in rank order, where the merge
        happens; None where it does not.

        With a group the parts are gathered to rank 0. ``--shard`` processes save their part as
        ``folder/.parts/<name>.<i>-of-<N>.npz`` (tagged with ``key``, the step's settings) and the one
        that finds all N parts with the same key returns them, so the last shard to finish merges.
        """
        if self.group:
            return self.gather(part)
        if not self.files:
            return [part]
        from dvis.formats.atomic import atomic_savez

        parts_dir = Path(folder) / ".parts"
        parts_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(key, sort_keys=True)
        atomic_savez(parts_dir / f"{name}.{self.tag}.npz", key=np.array(text), **part)
        found = []
        for i in range(self.world):
            path = parts_dir / f"{name}.{i}-of-{self.world}.npz"
            if not path.is_file():
                return None
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != text:
                    return None
                found.append({k: z[k] for k in z.files if k != "key"})
        return found

    def drop_parts(self, folder: str | Path, name: str) -> None:
        """Remove ``--shard`` part files once their merged result is written."""
        if self.files:
            for i in range(self.world):
                (Path(folder) / ".parts" / f"{name}.{i}-of-{self.world}.npz").unlink(missing_ok=True)
            try:
                (Path(folder) / ".parts").rmdir()
            except OSError:
                pass

    def barrier(self) -> None:
        if self.group:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def setup(device: str = "cpu", shard: str | tuple[int, int] | None = None) -> tuple[Shard, str]:
    """Join the torchrun group when launched by torchrun (``WORLD_SIZE`` > 1), else take ``--shard``.

    Returns the shard and the device this process uses (``cuda:<LOCAL_RANK>`` for CUDA under torchrun).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if shard:
            raise DvisError("use either torchrun or --shard, not both")
        import torch.distributed as dist

        cuda = device.startswith("cuda")
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        return Shard(dist.get_rank(), dist.get_world_size(), True), device
    if shard:
        i, n = parse_shard(shard) if isinstance(shard, str) else shard
        return Shard(i, n, False), device
    return Shard(), device
