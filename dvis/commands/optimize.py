"""``dvis optimize``: regularized gradient ascent images for units (Yosinski et al. 2015)."""
from __future__ import annotations

from pathlib import Path

from dvis.cli import add_model_argument, parse_layers
from dvis.errors import DvisError
from dvis.optvis.settings import LR_POLICIES, STARTS, OptSettings

DEFAULTS = OptSettings()


def parse_units(text: str) -> list[int] | None:
    """'all' -> None; '1,5,7-9' -> [1, 5, 7, 8, 9]."""
    if text == "all":
        return None
    units: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            units += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise DvisError(f"--units expects 'all' or a list like 0,3,10-20, got {text!r}") from None
    return units


def add_opt_arguments(p) -> None:
    p.add_argument("--preset", type=int, default=DEFAULTS.preset, help="regularization row of the paper's Table 1 (1-4)")
    p.add_argument("--seeds", type=int, default=DEFAULTS.seeds)
    p.add_argument("--iters", type=int, default=DEFAULTS.iters)
    p.add_argument("--lr-policy", choices=LR_POLICIES, default=DEFAULTS.lr_policy)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="step for the constant policy")
    p.add_argument("--max-lr", type=float, default=DEFAULTS.max_lr, help="step cap for the progress policy")
    p.add_argument("--desired-prog", type=float, default=DEFAULTS.desired_prog,
                   help="predicted activation gain per step for the progress policy")
    p.add_argument("--start", choices=STARTS, default=DEFAULTS.start)
    p.add_argument("--redirect-iters", type=int, default=DEFAULTS.redirect_iters,
                   help="first steps with redirected ReLU gradients (0 = true gradient throughout)")
    p.add_argument("--opt-batch-size", type=int, default=DEFAULTS.batch_size, help="images per forward/backward")


def settings_from(args) -> OptSettings:
    return OptSettings(preset=args.preset, seeds=args.seeds, iters=args.iters, lr_policy=args.lr_policy, lr=args.lr,
                       max_lr=args.max_lr, desired_prog=args.desired_prog, start=args.start,
                       redirect_iters=args.redirect_iters, batch_size=args.opt_batch_size)


def register(sub) -> None:
    p = sub.add_parser("optimize", help="optimize images that maximally activate units",
                       description="Regularized gradient ascent (Yosinski et al. 2015), batched across units and seeds.")
    add_model_argument(p)
    p.add_argument("--layers", "--layer", dest="layers", required=True, help="comma-separated layer names or 'all'")
    p.add_argument("--units", default="all", help="'all' or e.g. 0,3,10-20")
    p.add_argument("--out", default=None, help="unit_vis folder (default: the model's)")
    p.add_argument("--maxes", default=None, help="maxes run to compare activations with (default: <unit_vis>/maxes)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--shard", help="i/N: compute only shard i of N (the last shard to finish merges); "
                                   "or launch with torchrun")
    p.add_argument("--force", action="store_true",
                   help="recompute complete layers, and replace optimized images made with other settings")
    p.add_argument("--quiet", action="store_true")
    add_opt_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.models.loading import load_model
    from dvis.pipeline.distributed import setup
    from dvis.pipeline.precompute import default_run_dir, format_opt_summary, run_optimize_step, unit_vis_root

    shard, device = setup(args.device, args.shard)
    model = load_model(args.model, device=device)
    root = unit_vis_root(model, args.out)
    layers = parse_layers(args.layers, model)
    units = parse_units(args.units)
    run_dir = Path(args.maxes) if args.maxes else default_run_dir(root)
    settings = settings_from(args)
    for layer in layers:
        summary = run_optimize_step(model, layer, root, settings, units, run_dir, args.force,
                                    not args.quiet and shard.main, shard)
        if summary or shard.main and not shard.files:
            print(format_opt_summary(summary) if summary else f"optimize {layer}: already complete")
        elif shard.files:
            print(f"optimize {layer}: shard {shard.rank}/{shard.world} done; the last shard to finish writes it")
    shard.close()
    return 0
