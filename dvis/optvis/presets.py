"""Regularization hyper-parameters of Yosinski et al. 2015, Table 1."""
from __future__ import annotations

from dataclasses import dataclass

from dvis.errors import DvisError


@dataclass(frozen=True)
class Regularization:
    """One row of Table 1: L2 decay per step, Gaussian blur width (px) applied every ``blur_every``
    steps (0 = never), and the percentiles below which pixels are zeroed by norm and by contribution."""

    decay: float = 0.0
    blur_width: float = 0.0
    blur_every: int = 0
    norm_pct: float = 0.0
    contrib_pct: float = 0.0


PRESETS = {
    1: Regularization(decay=0.0, blur_width=0.5, blur_every=4, norm_pct=50, contrib_pct=0),
    2: Regularization(decay=0.3, blur_width=0.0, blur_every=0, norm_pct=20, contrib_pct=0),
    3: Regularization(decay=0.0001, blur_width=1.0, blur_every=4, norm_pct=0, contrib_pct=0),
    4: Regularization(decay=0.0, blur_width=0.5, blur_every=4, norm_pct=0, contrib_pct=90),
}
DEFAULT_PRESET = 3
#: Gradient steps per row in the original toolbox's example runs of the four rows (500-1,000; dvis
#: defaults to 50 steps, see OptSettings).
PAPER_ITERS = {1: 500, 2: 750, 3: 1000, 4: 1000}


def preset(number: int) -> Regularization:
    """The regularization of Table 1's row ``number`` (1..4)."""
    if number not in PRESETS:
        raise DvisError(f"unknown preset {number}; the paper's Table 1 has presets 1, 2, 3 and 4")
    return PRESETS[number]
