""":class:`LoadedModel`: a net ready to visualize (see docs/architecture.md for the contract)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dvis.imaging.preprocess import deprocess, normalize, prepare_image
from dvis.models.weights import NO_WEIGHTS, load_state_dict_file


@dataclass(repr=False)
class LoadedModel:
    """A net ready to visualize; see docs/architecture.md for the contract."""

    name: str
    net: nn.Module
    layers: list[str]
    display_names: dict[str, str]
    input_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: list[str]
    folder: Path | None
    unit_vis_dir: Path | None
    checkpoints: list[Path]
    device: torch.device
    weights_source: str = NO_WEIGHTS
    #: Unit image folders in order of preference (computed before shipped); unit_vis_dir is the first.
    unit_vis_dirs: list[Path] = field(default_factory=list)
    #: The model folder's own unit images (what a model folder ships).
    shipped_unit_vis_dir: Path | None = None
    _mean_t: torch.Tensor = field(init=False)
    _std_t: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32)
        self._std_t = torch.tensor(self.std, dtype=torch.float32)

    def __repr__(self) -> str:
        return (f"LoadedModel(name={self.name!r}, input_size={self.input_size}, channels={self.channels}, "
                f"layers={len(self.layers)}, labels={len(self.labels)}, device={self.device}, weights={self.weights_source!r})")

    def preprocess(self, img: np.ndarray) -> torch.Tensor:
        """HxW / HxWx3 / HxWx4 uint8 image of any size -> normalized 1xCxHxW tensor on the device."""
        arr = prepare_image(img, self.input_size, self.channels)
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].to(self.device, torch.float32) / 255.0
        return self.normalize(x)

    def normalize(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """NxCxHxW float in [0, 1], already resized -> normalized (batched path for pipelines;
        ``inplace`` overwrites ``x``, see :func:`dvis.imaging.preprocess.normalize`)."""
        return normalize(x, self._mean_t, self._std_t, inplace)

    def deprocess(self, x: torch.Tensor) -> np.ndarray:
        """1xCxHxW or CxHxW normalized tensor -> displayable HxWx3 uint8."""
        return deprocess(x, self._mean_t, self._std_t)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a state_dict file (e.g. a training checkpoint) into ``.net``."""
        load_state_dict_file(self.net, path)
        self.weights_source = str(path)
