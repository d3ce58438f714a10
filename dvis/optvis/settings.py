"""Settings of an optimization run (kept free of heavy imports so the CLI can build its parsers)."""
from __future__ import annotations

from dataclasses import dataclass

from dvis.errors import DvisError
from dvis.optvis.presets import DEFAULT_PRESET, preset

STARTS = ("mean_plus_noise", "uniform", "mean")
LR_POLICIES = ("constant", "progress")


@dataclass
class OptSettings:
    """How to optimize. ``progress`` picks each image's step so the first-order predicted gain is
    ``desired_prog`` (capped at ``max_lr``), the paper's "progress" policy; ``constant`` uses ``lr``."""

    preset: int = DEFAULT_PRESET
    seeds: int = 2
    # 50 steps of lr 1.0 roughly double the best dataset activation on zf-cifar10 and keep all
    # ~1500 units x 2 seeds within minutes on 2 CPU cores.
    iters: int = 50
    lr_policy: str = "constant"
    lr: float = 1.0
    max_lr: float = 5.0
    desired_prog: float = 2.0
    start: str = "mean_plus_noise"
    # First steps with redirected ReLU gradients, so units behind closed ReLUs (pool layers) start moving.
    redirect_iters: int = 10
    batch_size: int = 256

    def validate(self) -> None:
        preset(self.preset)
        if self.lr_policy not in LR_POLICIES:
            raise DvisError(f"unknown lr policy {self.lr_policy!r}; expected one of {', '.join(LR_POLICIES)}")
        if self.start not in STARTS:
            raise DvisError(f"unknown start {self.start!r}; expected one of {', '.join(STARTS)}")
        if self.seeds < 1 or self.iters < 1 or self.batch_size < 1:
            raise DvisError("--seeds, --iters and --batch-size must be at least 1")


