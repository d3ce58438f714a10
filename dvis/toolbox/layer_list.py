"""The layer list grouped by block: pure functions from the layer names to the blocks, the names shown
within them, and where the block-jump keys go (:func:`block_step`). The control pane lays it out and
draws it (:mod:`dvis.toolbox.control_pane`).

densenet201 lists 216 layers, maxvit_t 257, ViT repeats ``encoder.layers.encoder_layer_K.`` on every
name. :func:`group_layers` cuts each name at its first indexed part (``denseblock1``, ``layer3``,
``features.5``, ``encoder_layer_7``, ``blocks.2``): consecutive names with the same cut form a block,
shown once as the block's label; within a block, parts every name shares are dropped, and an indexed
part whose stem every name shares keeps its index (``denselayer16.conv2`` -> ``16.conv2``). Names with
no indexed part (``conv_proj``, ``avgpool``, ``fc``) stand alone, as does a block of one layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_INDEXED = re.compile(r"^(?P<stem>[A-Za-z_]*?)(?P<index>\d+)$")
#: What a block's own output is called within the block (``features.denseblock1`` in its block).
OUTPUT = "out"


@dataclass(frozen=True)
class LayerGroups:
    """The layer list by block: per block its label ("" for layers standing alone) and its first
    layer; per layer its block and the name it shows within the block."""

    labels: tuple[str, ...]
    starts: tuple[int, ...]
    block_of: tuple[int, ...]
    short: tuple[str, ...]

    def members(self, block: int) -> range:
        """Indices of the layers in ``block``."""
        end = self.starts[block + 1] if block + 1 < len(self.starts) else len(self.block_of)
        return range(self.starts[block], end)


def _shared_prefix(parts: list[list[str]]) -> int:
    """How many leading parts all names share, each name keeping at least one of its own."""
    if not parts:
        return 0
    n = min(len(p) for p in parts) - 1
    k = 0
    while k < n and all(p[k] == parts[0][k] for p in parts):
        k += 1
    return k


def _short_names(rests: list[list[str]]) -> list[str]:
    """The names within one block: the parts all share dropped (unless only bare indices would be
    left: ``mlp.0``, ``mlp.3`` stay), an interior part all share before a named part dropped
    (maxvit's ``layers`` in ``0.layers.MBconv``), and the shared stem of the leading indexed part cut
    (``denselayer16.conv2`` -> ``16.conv2``)."""
    named = [r for r in rests if r]
    if len(named) > 1:
        k = _shared_prefix(named)
        if not all(len(r) == k + 1 and r[k].isdigit() for r in named):
            named = [r[k:] for r in named]
        depth = max(len(r) for r in named)
        drop = {j for j in range(1, depth - 1)
                if all(len(r) > j + 1 for r in named) and len({r[j] for r in named}) == 1
                and not _INDEXED.match(named[0][j]) and not any(r[j + 1].isdigit() for r in named)}
        named = [[p for j, p in enumerate(r) if j not in drop] for r in named]
        found = [_INDEXED.match(r[0]) for r in named]
        if all(found) and found[0]["stem"] and len({m["stem"] for m in found}) == 1:
            named = [[r[0][len(found[0]["stem"]):]] + r[1:] for r in named]
    it = iter(named)
    return [".".join(next(it)) if r else OUTPUT for r in rests]


def _label(key: tuple[str, ...]) -> str:
    """A block's label: its indexed part, with the part before it when the index is a bare number."""
    return ".".join(key[-2:]) if key[-1].isdigit() and len(key) > 1 else key[-1]


def group_layers(names: list[str]) -> LayerGroups:
    """The blocks of ``names`` (display names, in list order); see the module docstring."""
    parts = [n.split(".") for n in names]
    k = _shared_prefix(parts) if len(parts) > 1 else 0
    parts = [p[k:] for p in parts]
    cuts = []
    for p in parts:
        i = next((j for j, part in enumerate(p) if any(ch.isdigit() for ch in part)), None)
        cuts.append((None, p) if i is None else (tuple(p[:i + 1]), p[i + 1:]))
    # runs of one key are blocks; a run of one layer, or a name with no indexed part, stands alone
    runs: list[tuple[tuple[str, ...] | None, list[int]]] = []
    for i, (key, _) in enumerate(cuts):
        if runs and key is not None and runs[-1][0] == key:
            runs[-1][1].append(i)
        else:
            runs.append((key, [i]))
    blocks: list[tuple[str, list[int], list[str]]] = []
    for key, members in runs:
        if key is None or len(members) == 1:
            short = [".".join(parts[i]) for i in members]
            if blocks and blocks[-1][0] == "":
                blocks[-1][1].extend(members)
                blocks[-1][2].extend(short)
            else:
                blocks.append(("", list(members), short))
        else:
            blocks.append((_label(key), members, _short_names([cuts[i][1] for i in members])))
    labels, starts, block_of, short = [], [], [0] * len(names), [""] * len(names)
    for b, (label, members, shown) in enumerate(blocks):
        labels.append(label)
        starts.append(members[0])
        for i, s in zip(members, shown):
            block_of[i], short[i] = b, s
    return LayerGroups(tuple(labels), tuple(starts), tuple(block_of), tuple(short))


def block_step(starts: tuple[int, ...], layer: int, step: int) -> int:
    """The first layer of the block ``step`` blocks after (before, when negative) the one holding
    ``layer``; stepping back from inside a block goes to its own start first. Clamped to the list."""
    if not starts:
        return layer
    block = max(b for b, s in enumerate(starts) if s <= layer) if layer >= starts[0] else 0
    if step < 0 and layer > starts[block]:
        step += 1
    return starts[max(0, min(len(starts) - 1, block + step))]
