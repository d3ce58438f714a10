"""What :func:`dvis.engine.geometry.model_geometry` returns: a :class:`LayerGeometry` per layer, with
the :class:`ReceptiveField` of one of its positions."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a layer's units: unit (y, x) sees input rows ``y*stride - padding`` on.

    ``size``, ``stride`` and ``padding`` (the effective padding) are (h, w) in input pixels;
    ``input_size`` is the (h, w) the field was computed for. Units that see the whole input
    (fc layers, after global pooling or attention) have size = stride = input size, padding 0.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    input_size: tuple[int, int]
    #: Positions per window (h, w) that share one field (attention inside non-overlapping windows,
    #: MaxViT): unit (y, x) has the box of (y - y % window[0], x - x % window[1]), whose size covers
    #: the whole window. Where every position sees the whole input (after global attention) the grid
    #: is one window and the size the input's. (1, 1) for everything else.
    window: tuple[int, int] = (1, 1)

    def box(self, y, x, clip: bool = True):
        """(top, left, bottom, right) of unit (y, x) in input pixels, bottom/right exclusive.

        ``clip=False`` gives the unclipped box (may extend past the image), for padding-aware
        crops. ``y``/``x`` may also be integer numpy arrays (then the four are arrays).
        """
        y, x = np.asarray(y), np.asarray(x)
        top = (y - y % self.window[0]) * self.stride[0] - self.padding[0]
        left = (x - x % self.window[1]) * self.stride[1] - self.padding[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if clip:
            h, w = self.input_size
            top, bottom = np.clip(top, 0, h), np.clip(bottom, 0, h)
            left, right = np.clip(left, 0, w), np.clip(right, 0, w)
        if np.ndim(top) == 0:
            return int(top), int(left), int(bottom), int(right)
        return top, left, bottom, right


def whole_input(input_size: tuple[int, int]) -> ReceptiveField:
    """The field of a unit that sees the whole input."""
    return ReceptiveField(tuple(input_size), tuple(input_size), (0, 0), tuple(input_size))


INPUT_INDEPENDENT = "output does not depend on the input"


@dataclass(frozen=True)
class LayerGeometry:
    """Shape, layout and receptive field of one layer's output (see :mod:`dvis.engine.geometry`)."""

    name: str
    shape: tuple[int, ...]        # per-sample output shape as the module produces it (no batch dim; windows
                                  # merged with the batch: the sample's share of the first dimension first)
    layout: str                   # "chw", "hwc", "tokens" (N, L, C with a patch grid), "vector" (N, C),
                                  # "partitioned" (windows/grid cells: any order of channel, row, column parts), "other"
    channels: int                 # units per position
    grid: tuple[int, int] | None  # (H, W) of unit positions for maps and token patch grids
    extra_tokens: int             # class/register/distillation tokens before the grid (tokens layout), else 0
    rf: ReceptiveField | None     # field of one position; the whole input for vectors and global layers
    global_context: bool          # a global op (SE gate, attention, global pool, linear over space) feeds it
    runs: bool                    # False when the forward never reaches it (GoogLeNet/Inception aux heads in eval)
    reason: str                   # why not visualizable / why global, "" otherwise
    #: "partitioned" only: the sizes of the tensor's parts per sample, in its own row-major order
    #: (batch excluded), and the order of those parts that lists channels, rows, columns (each coarse
    #: to fine): ``to_maps`` is a reshape, that permutation and a reshape.
    partition: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    @property
    def input_dependent(self) -> bool:
        """False for a module whose output the trace finds no field of the input in (e.g. Swin-V2's
        relative-position-bias MLP, computed from a constant table): nothing of the image to show."""
        return self.reason != INPUT_INDEPENDENT

    @property
    def browsable(self) -> bool:
        """Runs and depends on the input: what ``default_layers`` lists. "other" layouts stay listed
        (shown disabled with the reason), so that a gap in the layout rules stays visible."""
        return self.runs and self.input_dependent

    @property
    def visualizable(self) -> bool:
        """Runs and has units to show: a map, a token grid or a vector."""
        return self.runs and self.layout != "other"

    @property
    def spatial(self) -> bool:
        """Units have positions (a map, a token grid or a partitioned map)."""
        return self.layout in ("chw", "hwc", "tokens", "partitioned")

    @property
    def reordered(self) -> bool:
        """Its values need :func:`to_maps` to be N x C x H x W (hwc, tokens, partitioned)."""
        return self.layout in ("hwc", "tokens", "partitioned")
