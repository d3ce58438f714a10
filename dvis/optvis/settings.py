"""Settings of an optimization run (kept free of heavy imports so the CLI can build its parsers)."""
from __future__ import annotations

from dataclasses import dataclass, fields

from dvis.constants import OPT_METHODS
from dvis.errors import DvisError
from dvis.optvis.presets import DEFAULT_PRESET, PAPER_ITERS, preset

STARTS = ("mean_plus_noise", "uniform", "mean")
LR_POLICIES = ("constant", "progress")
#: Parameterizations: Yosinski et al. 2015's pixels, Olah et al. 2017's decorrelated Fourier image,
#: Fel et al. 2023's phase-only MACO, and Hamblin et al. 2024's accentuation of the unit's top-1 image.
METHODS = OPT_METHODS
#: The method ``dvis optimize`` and ``precompute`` use without ``--method`` (see docs/optvis.md).
DEFAULT_METHOD = "pixel"
#: Where the objective reads the layer (dvis.optvis.objectives.WHERE, repeated here for the CLI).
OBJECTIVES = ("centre", "mean", "class_token")

#: The fields of the original pixel method: its settings key is exactly these (images made before
#: the other methods existed keep matching).
PIXEL_FIELDS = ("preset", "seeds", "iters", "lr_policy", "lr", "max_lr", "desired_prog", "start",
                "redirect_iters", "batch_size")
#: Per method, the steps, step size and transformation robustness used where the settings leave
#: them unset (None). Chosen by bench/featvis.py; docs/optvis.md gives the figures.
METHOD_DEFAULTS = {
    # 50 steps of lr 1.0 roughly double the best dataset activation on zf-cifar10 and keep all
    # ~1500 units x 2 seeds within minutes on 2 CPU cores.
    "pixel": dict(iters=50, lr=1.0),
    # Lucid's standard transforms (jitter 8 and 4 px of 224, scale 0.9-1.1, rotation +-10 degrees), Adam 0.05.
    "fourier": dict(iters=128, lr=0.05, jitter=0.05, scale=(0.9, 1.1), rotate=10.0, crop=None, views=1, noise=0.0),
    # horama's NAdam lr 1.0 with random crops and noise; on zf-cifar10 (bench/featvis.py) one crop of
    # 0.8-1.0 of the side per step kept the natural high-frequency share (0.081 vs 0.081) at half the
    # cost of two (0.094).
    "maco": dict(iters=128, lr=1.0, jitter=0.0, scale=(1.0, 1.0), rotate=0.0, crop=(0.8, 1.0), views=1,
                 noise=0.02),
    # A Fourier image started at the top-1 dataset image, kept near it in the Fourier parameter space.
    "accentuate": dict(iters=64, lr=0.05, jitter=0.05, scale=(0.9, 1.1), rotate=10.0, crop=None, views=1,
                       noise=0.0),
}
ROBUST_FIELDS = ("jitter", "scale", "rotate", "crop", "views", "noise")


@dataclass
class OptSettings:
    """How to optimize. ``method`` picks the parameterization (:data:`METHODS`); ``iters``, ``lr``
    and the robustness fields left None take the method's :data:`METHOD_DEFAULTS` when the
    settings are made.

    Pixel method: ``progress`` picks each image's step so the first-order predicted gain is
    ``desired_prog`` (capped at ``max_lr``), the paper's "progress" policy; ``constant`` uses ``lr``.
    Other methods: Adam (NAdam for maco) of step ``lr`` on the parameterization, random views per
    step (``jitter`` fraction of the side, zoom range ``scale``, ``rotate`` degrees, MACO ``crop``
    side range, ``views`` per image, ``noise``), 1/f^``decay`` spectrum scaling (fourier,
    accentuate), ``penalty`` on the distance to the start image (accentuate). Every method:
    ``objective`` (where the unit is read), ``negative`` (minimize), ``diversity`` (Gram-matrix
    diversity across a unit's seeds; not for pixel)."""

    method: str = DEFAULT_METHOD
    preset: int = DEFAULT_PRESET
    seeds: int = 2
    iters: int | None = None
    lr_policy: str = "constant"
    lr: float | None = None
    max_lr: float = 5.0
    desired_prog: float = 2.0
    start: str = "mean_plus_noise"
    # First steps with redirected ReLU gradients, so units behind closed ReLUs (pool layers) start moving.
    redirect_iters: int = 10
    batch_size: int = 256
    objective: str = "centre"
    negative: bool = False
    diversity: float = 0.0
    # horama's 1/f^1.5 rather than Lucid's 1/f: on zf-cifar10 the high-frequency share fell from 2.2x
    # the natural images' to 1.5x, and the activation rose (bench/featvis.py).
    decay: float = 1.5
    penalty: float = 1.0
    jitter: float | None = None
    scale: tuple[float, float] | None = None
    rotate: float | None = None
    crop: tuple[float, float] | None = None
    views: int | None = None
    noise: float | None = None

    def __post_init__(self):
        # The method's defaults fill the fields left None (crop stays None for methods without crops).
        for k, v in METHOD_DEFAULTS.get(self.method, {}).items():
            if getattr(self, k) is None:
                setattr(self, k, v)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise DvisError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        s = self
        preset(s.preset)
        if s.lr_policy not in LR_POLICIES:
            raise DvisError(f"unknown lr policy {s.lr_policy!r}; expected one of {', '.join(LR_POLICIES)}")
        if s.start not in STARTS:
            raise DvisError(f"unknown start {s.start!r}; expected one of {', '.join(STARTS)}")
        if s.objective not in OBJECTIVES:
            raise DvisError(f"unknown objective {s.objective!r}; expected one of {', '.join(OBJECTIVES)}")
        if s.seeds < 1 or s.iters < 1 or s.batch_size < 1:
            raise DvisError("--seeds, --iters and --batch-size must be at least 1")
        if s.lr <= 0:
            raise DvisError(f"--lr must be positive; got {s.lr}")
        if s.method == "pixel" and s.diversity:
            raise DvisError("--diversity needs a method other than pixel (it is a term of the Adam objective)")
        if s.method != "pixel":
            if s.views < 1 or s.noise < 0 or s.jitter < 0 or s.rotate < 0 or s.penalty < 0 or s.diversity < 0:
                raise DvisError("--views must be at least 1; --noise, --jitter, --rotate, --penalty and "
                                "--diversity must not be negative")
            for name in ("scale", "crop"):
                r = getattr(s, name)
                if r is not None and not (len(r) == 2 and 0 < r[0] <= r[1]):
                    raise DvisError(f"--{name} expects a range LO,HI with 0 < LO <= HI; got {r}")

    def key(self) -> dict:
        """What identifies images made with these settings (the provenance's ``settings``): the
        pixel method's original fields (plus objective and sign when not the defaults), or every
        field another method uses, with its name."""
        s = self
        if s.method == "pixel":
            out = {k: getattr(s, k) for k in PIXEL_FIELDS}
            if s.objective != "centre" or s.negative:
                out.update(objective=s.objective, negative=s.negative)
            return out
        skip = set(PIXEL_FIELDS) - {"seeds", "iters", "lr", "batch_size"}
        if s.method == "maco":
            skip |= {"decay", "penalty"}
        elif s.method == "fourier":
            skip |= {"penalty"}
        out = {f.name: getattr(s, f.name) for f in fields(s) if f.name not in skip}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def paper_iters(number: int) -> int:
    """Gradient steps the original toolbox ran with Table 1's row ``number`` (``--iters paper``)."""
    preset(number)
    return PAPER_ITERS[number]

