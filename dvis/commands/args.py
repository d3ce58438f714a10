"""The command-line contract: every flag two commands share is spelled, parsed and explained here once.

One name per concept:

* ``--model`` (or the optional positional MODEL) and ``--weights`` on every command that loads a model;
* ``--run-dir`` is always a ``dvis maxes`` run folder; ``--out`` is always this command's own output;
* ``--layers`` is always the layer list; lists are always comma-separated (``--layers conv1,conv2``);
* a step's flags (maxes, crops, optimize) are defined once, and ``dvis precompute`` reuses them.

Old spellings keep working for one release: they print ``dvis CMD: warning: OLD is deprecated, use NEW``.
This module imports nothing heavy: building every parser (``dvis --help``) loads neither torch nor
OpenCV nor matplotlib.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence

from dvis.constants import BACK_MODES
from dvis.errors import DvisError
from dvis.optvis.settings import (DEFAULT_METHOD, LR_POLICIES, METHOD_DEFAULTS, METHODS, OBJECTIVES, STARTS, OptSettings,
                                  paper_iters)

MODEL_HELP = "model folder name or path, model.yaml, or torchvision/timm architecture (default: zf-cifar10)"
WEIGHTS_HELP = ("override the model's weights: a state_dict file, a torchvision weights name, or none "
                "(random init)")
PRECISIONS = ("fp32", "bf16", "fp16")
DECODERS = ("cpu", "gpu", "auto")


def warn_deprecated(prog: str, old: str, new: str) -> None:
    """The one-line notice an old spelling prints (it keeps working for one release)."""
    print(f"{prog}: warning: {old} is deprecated, use {new}", file=sys.stderr)


def _split(values: str | Sequence[str]) -> list[str]:
    items = [values] if isinstance(values, str) else list(values)
    return [s.strip() for item in items for s in item.split(",") if s.strip()]


class ListAction(argparse.Action):
    """A comma-separated list (``--images a.png,b.png``) stored as a list of strings.

    The older space-separated form (``--images a.png b.png``) still parses, with a deprecation line;
    ``choices`` are checked per item."""

    def __init__(self, option_strings, dest, nargs=None, choices=None, **kw):
        self.allowed = tuple(choices) if choices is not None else None
        super().__init__(option_strings, dest, nargs="+", **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 1:
            warn_deprecated(parser.prog, f"a space-separated {option_string} list",
                            f"commas: {option_string} {','.join(values)}")
        items = _split(values)
        if self.allowed is not None:
            bad = [v for v in items if v not in self.allowed]
            if bad:
                raise argparse.ArgumentError(self, f"invalid choice: {bad[0]!r} (choose from "
                                                   f"{', '.join(self.allowed)})")
        setattr(namespace, self.dest, items)


class DeprecatedAction(argparse.Action):
    """An old spelling of a flag: stores like the new one (one value, or a ``list``) and prints the
    deprecation line."""

    def __init__(self, option_strings, dest, new: str, kind: str = "store", **kw):
        self.new, self.kind = new, kind
        super().__init__(option_strings, dest, nargs="+" if kind == "list" else None, help=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(parser.prog, option_string, self.new)
        setattr(namespace, self.dest, _split(values) if self.kind == "list" else values)


def deprecated(p: argparse.ArgumentParser, old: str, new: str, dest: str, kind: str = "store") -> None:
    """Accept ``old`` as a hidden, warning alias of ``new`` (stored in ``dest``)."""
    p.add_argument(old, dest=dest, action=DeprecatedAction, new=new, kind=kind)


# ---- the model --------------------------------------------------------------------------------

def add_model(p: argparse.ArgumentParser, help: str = MODEL_HELP, positional: bool = True,
              weights: bool = True, many: bool = False) -> None:
    """``--model`` and the optional positional MODEL (resolved by :func:`resolve_model_alias`), and
    ``--weights``. ``many``: comma-separated lists of models and weights (``dvis filters``)."""
    if many:
        p.add_argument("--model", action=ListAction, default=[], metavar="MODEL[,MODEL...]", help=help)
    else:
        p.add_argument("--model", default=None, help=help)
    if positional:
        p.add_argument("model_positional", nargs="?", default=None, metavar="MODEL", help="same as --model")
    if weights:
        if many:
            p.add_argument("--weights", action=ListAction, default=[], metavar="WEIGHTS[,WEIGHTS...]",
                           help="weights (files, torchvision weights names, 'none' for random init): one per "
                                "model, or several for a single model, e.g. checkpoints")
        else:
            p.add_argument("--weights", default=None, help=WEIGHTS_HELP)


def resolve_model_alias(args: argparse.Namespace) -> None:
    """Fold the positional MODEL into ``args.model``.

    Where the positional used to be a run folder (``dvis crops RUN``: the parser's default
    ``positional_run``), it still is one when ``--run-dir`` is not given, with a deprecation line."""
    alias = getattr(args, "model_positional", None)
    if alias is None:
        return
    if getattr(args, "positional_run", False) and args.run is None:
        warn_deprecated(f"dvis {args.command}", "the run folder as a positional", f"--run-dir {alias}")
        args.run, args.model_positional = alias, None
        return
    if isinstance(args.model, list):  # a list of models (dvis filters)
        alias_list = _split(alias)
        if args.model and args.model != alias_list:
            raise DvisError(f"two models given: {alias!r} and --model {','.join(args.model)!r}")
        args.model = alias_list
        return
    if args.model is not None and args.model != alias:
        raise DvisError(f"two models given: {alias!r} and --model {args.model!r}")
    args.model = alias


def load_model_from(args: argparse.Namespace, device: str | None = None, spec: str | None = None):
    """The model named by ``args.model`` (or ``spec``) with ``args.weights``, on ``device`` (default ``args.device``)."""
    from dvis.models.loading import load_model

    return load_model(args.model if spec is None else spec, device=device or getattr(args, "device", "cpu"),
                      weights=getattr(args, "weights", None))


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda or cuda:1 (default: cpu)")


# ---- folders ----------------------------------------------------------------------------------

def add_run(p: argparse.ArgumentParser, help: str, required: bool = False, old: Iterable[str] = ()) -> None:
    """``--run-dir`` (``args.run``): a ``dvis maxes`` run folder. Not ``--run``: torchrun, which
    launches these commands, takes ``--run`` for its own ``--run-path`` and stops. ``--run`` and
    ``old`` (this command's former spellings) still parse, with a deprecation line."""
    p.add_argument("--run-dir", dest="run", default=None, required=required, metavar="RUN", help=help)
    for spelling in ("--run", *old):
        deprecated(p, spelling, "--run-dir", "run")


def add_out(p: argparse.ArgumentParser, help: str, default: str | None = None, required: bool = False) -> None:
    """``--out``: where this command writes its own output."""
    p.add_argument("--out", default=default, required=required, metavar="DIR", help=help)


def add_unit_vis_out(p: argparse.ArgumentParser) -> None:
    add_out(p, "unit_vis folder to write the unit images into (default: the model's)")


# ---- layers and lists --------------------------------------------------------------------------

def add_layers(p: argparse.ArgumentParser, default_help: str, required: bool = False, one: bool = False,
               old: Iterable[str] = ()) -> None:
    """``--layers``: comma-separated layer names or ``all`` (parsed by :func:`parse_layers`);
    ``one``: the command takes a single layer (:func:`one_layer`)."""
    text = "layer name" if one else "comma-separated layer names or 'all'"
    p.add_argument("--layers", default=None, required=required, metavar="LAYER" if one else "LAYERS",
                   help=f"{text} (default: {default_help})" if default_help else text)
    for spelling in old:
        deprecated(p, spelling, "--layers", "layers")


def parse_layers(text: str | None, model=None) -> list[str] | None:
    """``--layers`` text -> names (None when not given); ``all`` -> every layer of ``model``. With a
    ``model`` an unknown name is refused here, before any work (``unknown layer 'cnov5' (did you mean
    conv5?)``: :func:`dvis.engine.layers.check_layers`)."""
    if not text:
        return None
    if text.strip() == "all":
        if model is None:
            raise DvisError("--layers all needs a model")
        return list(model.layers)
    if model is None:
        return _split(text)
    from dvis.engine.layers import check_layers

    return check_layers(model, _split(text))


def one_layer(text: str | None) -> str | None:
    """``--layers`` on a command that takes one layer: the name, or None when not given."""
    names = _split(text) if text else []
    if len(names) > 1:
        raise DvisError(f"--layers takes one layer here, got {len(names)}: {', '.join(names)}")
    return names[0] if names else None


def parse_list(text: str | None) -> list[str]:
    """A comma-separated option (``--modes deconv,guided``, ``--skip maxes``) -> its items."""
    return _split(text) if text else []


def choice_list(choices: Sequence[str]):
    """An argparse ``type`` for a comma-separated list whose items must be among ``choices``."""
    def parse(text: str) -> list[str]:
        items = _split(text)
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose a comma-separated list of {', '.join(choices)}")
        return items
    parse.__name__ = "list"
    return parse


def add_images(p: argparse.ArgumentParser, help: str, required: bool = True, many: bool = False,
               old: Iterable[str] = ()) -> None:
    """``--images``: an image source (``many``: a comma-separated list of sources). With ``old``
    spellings the command checks ``required`` itself (argparse would ask for the new spelling)."""
    required = required and not old
    if many:
        p.add_argument("--images", action=ListAction, required=required, metavar="SOURCE[,SOURCE...]", help=help)
    else:
        p.add_argument("--images", required=required, help=help)
    for spelling in old:
        deprecated(p, spelling, "--images", "images", kind="list" if many else "store")


# ---- counts -----------------------------------------------------------------------------------

def at_least(minimum: int):
    """An argparse ``type`` for a count: an integer of at least ``minimum`` (``--top 0`` or
    ``--batch-size 0`` is a usage error, not a traceback deep in the run)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = "int"
    return parse


#: Counts that must be positive (k, batch sizes, seeds, steps) and those that may be 0 (workers, bottom-k).
POSITIVE, NON_NEGATIVE = at_least(1), at_least(0)


# ---- process ----------------------------------------------------------------------------------

def default_workers() -> int:
    """Decoding workers: two, or fewer when this process may use fewer CPU cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


def add_batch_size(p: argparse.ArgumentParser, default: int, help: str) -> None:
    p.add_argument("--batch-size", type=POSITIVE, default=default, help=f"{help} (default: {default})")


def add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=NON_NEGATIVE, default=default_workers(),
                   help="DataLoader decoding workers, 0 = decode in the main process (default: 2, or fewer "
                        "on fewer cores)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_shard(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--shard", metavar="I/N", help=help)


def add_force(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--force", action="store_true", help=help)


# ---- the pipeline steps' own flags (each defined once; dvis precompute reuses all three) ----------

def add_maxes_flags(p: argparse.ArgumentParser) -> None:
    """What ``dvis maxes`` computes: k, batching, decoding, precision, statistics."""
    p.add_argument("--top", type=POSITIVE, default=9, help="top images kept per unit (default: 9)")
    p.add_argument("--bottom-k", type=NON_NEGATIVE, default=0, help="also keep each unit's K least-activating images")
    p.add_argument("--decode", choices=DECODERS, default="auto",
                   help="JPEG decoding: gpu = nvjpeg on the device, cpu = workers (auto: gpu on a CUDA device)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="forward precision (fp32 is exact; see docs/pipeline.md for bf16/fp16 agreement)")
    p.add_argument("--labels", help="labels file (lines '<image name> <class>'); default: class folders")
    p.add_argument("--no-stats", action="store_true", help="skip the unit statistics (stats.npz, see docs/atlas.md)")
    p.add_argument("--checkpoint-every", type=float, default=30.0,
                   help="seconds between checkpoints of an interrupted run (default: 30)")


def track_config(args: argparse.Namespace, device, progress: bool):
    """The :class:`dvis.pipeline.maxes.TrackConfig` of :func:`add_maxes_flags`' flags."""
    from dvis.imaging.decode import resolve
    from dvis.pipeline.maxes import TrackConfig

    return TrackConfig(top=args.top, batch_size=args.batch_size, workers=args.workers,
                       checkpoint_every=args.checkpoint_every, progress=progress, stats=not args.no_stats,
                       bottom_k=args.bottom_k, decode=resolve(args.decode, device), precision=args.precision)


def add_crops_flags(p: argparse.ArgumentParser) -> None:
    """What ``dvis crops`` computes: the back-projections."""
    p.add_argument("--modes", type=choice_list(BACK_MODES), default=["deconv"], metavar="MODES",
                   help=f"comma-separated back-projections among {', '.join(BACK_MODES)} (default: deconv)")


_OPT = OptSettings()


def _default(name: str) -> str:
    """``(default: X)`` for an optimize setting; those a method sets list each method's value."""
    per = {m: d[name] for m, d in METHOD_DEFAULTS.items() if name in d}
    if per:
        return "(default: " + ", ".join(f"{m} {_show(v)}" for m, v in per.items()) + ")"
    return f"(default: {_show(getattr(_OPT, name))})"


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _range(text: str) -> tuple[float, float]:
    """'0.8,1.0' -> (0.8, 1.0)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    return lo, hi


def _iters(text: str) -> int | str:
    """A number of steps (at least 1), or 'paper' (the original toolbox's count for the preset)."""
    return text if text == "paper" else POSITIVE(text)


def add_optimize_flags(p: argparse.ArgumentParser) -> None:
    """What ``dvis optimize`` computes: the method (docs/optvis.md) and its settings."""
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help="pixel: regularized ascent on pixels (Yosinski 2015); fourier: decorrelated 1/f "
                        "Fourier image with transformation robustness (Olah 2017); maco: phase only, the "
                        "magnitude the maxes run's amplitude spectrum (Fel 2023; 1/f without one); accentuate: "
                        f"the unit's top-1 image, accentuated (Hamblin 2024) (default: {DEFAULT_METHOD})")
    p.add_argument("--objective", choices=OBJECTIVES, default=_OPT.objective,
                   help="where a unit is read: the centre of its map, the mean over positions/tokens, or the "
                        f"class token {_default('objective')}")
    p.add_argument("--negative", action="store_true", help="minimize the unit instead")
    p.add_argument("--diversity", type=float, default=_OPT.diversity,
                   help=f"weight of the Gram-matrix diversity across a unit's seeds (not pixel) {_default('diversity')}")
    p.add_argument("--preset", type=int, default=_OPT.preset,
                   help=f"regularization row of the paper's Table 1, 1-4 {_default('preset')}")
    p.add_argument("--seeds", type=POSITIVE, default=_OPT.seeds,
                   help=f"optimized images per unit, from different random starts {_default('seeds')}")
    p.add_argument("--iters", type=_iters, default=None,
                   help=f"gradient steps per image, or 'paper': the original's count for --preset {_default('iters')}")
    p.add_argument("--lr-policy", choices=LR_POLICIES, default=_OPT.lr_policy,
                   help=f"step size rule {_default('lr_policy')}")
    p.add_argument("--lr", type=float, default=None,
                   help=f"step: pixel's constant policy, the others' Adam/NAdam {_default('lr')}")
    p.add_argument("--max-lr", type=float, default=_OPT.max_lr,
                   help=f"step cap for the progress policy {_default('max_lr')}")
    p.add_argument("--desired-prog", type=float, default=_OPT.desired_prog,
                   help=f"predicted activation gain per step for the progress policy {_default('desired_prog')}")
    p.add_argument("--start-image", dest="start", choices=STARTS, default=_OPT.start,
                   help=f"starting image {_default('start')}")
    deprecated(p, "--start", "--start-image", "start")  # torchrun takes --start for its --start-method
    p.add_argument("--redirect-iters", type=NON_NEGATIVE, default=_OPT.redirect_iters,
                   help="first steps with redirected ReLU gradients, 0 = true gradient throughout "
                        f"{_default('redirect_iters')}")
    p.add_argument("--opt-batch-size", type=POSITIVE, default=_OPT.batch_size,
                   help=f"optimized images per forward/backward {_default('batch_size')}")
    p.add_argument("--decay", type=float, default=_OPT.decay,
                   help=f"fourier/accentuate spectrum scaling 1/f^DECAY {_default('decay')}")
    p.add_argument("--penalty", type=float, default=_OPT.penalty,
                   help=f"accentuate: weight of the distance to the start image {_default('penalty')}")
    p.add_argument("--jitter", type=float, default=None, help=f"random shift, a fraction of the side {_default('jitter')}")
    p.add_argument("--scale", type=_range, default=None, metavar="LO,HI", help=f"random zoom range {_default('scale')}")
    p.add_argument("--rotate", type=float, default=None, help=f"random rotation, +- degrees {_default('rotate')}")
    p.add_argument("--crop", type=_range, default=None, metavar="LO,HI",
                   help=f"MACO's random crops: side as a fraction of the image {_default('crop')}")
    p.add_argument("--views", type=POSITIVE, default=None, help=f"random views per image and step {_default('views')}")
    p.add_argument("--noise", type=float, default=None, help=f"noise added to each view {_default('noise')}")


def opt_settings(args: argparse.Namespace) -> OptSettings:
    """The :class:`dvis.optvis.settings.OptSettings` of :func:`add_optimize_flags`' flags."""
    iters = paper_iters(args.preset) if args.iters == "paper" else args.iters
    s = OptSettings(method=args.method, preset=args.preset, seeds=args.seeds, iters=iters, lr_policy=args.lr_policy,
                    lr=args.lr, max_lr=args.max_lr, desired_prog=args.desired_prog, start=args.start,
                    redirect_iters=args.redirect_iters, batch_size=args.opt_batch_size, objective=args.objective,
                    negative=args.negative, diversity=args.diversity, decay=args.decay, penalty=args.penalty,
                    jitter=args.jitter, scale=args.scale, rotate=args.rotate, crop=args.crop, views=args.views,
                    noise=args.noise)
    s.validate()
    return s


# ---- the experiments ---------------------------------------------------------------------------

def add_experiment_args(p: argparse.ArgumentParser, out_default: str) -> None:
    """``--model``/MODEL, ``--weights``, ``--device``, ``--out`` and ``--batch-size``, shared by every experiment command."""
    add_model(p)
    add_device(p)
    add_out(p, f"folder for the figure and numbers (default: {out_default})", default=out_default)
    add_batch_size(p, 64, "images per forward pass")
