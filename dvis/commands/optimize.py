"""``dvis optimize``: optimized images for units (pixel ascent of Yosinski et al. 2015, Fourier,
MACO, feature accentuation: docs/optvis.md)."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.errors import DvisError


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


def register(sub) -> None:
    p = sub.add_parser("optimize", help="optimize images that maximally activate units",
                       description="Optimized images (--method pixel: Yosinski et al. 2015; fourier: Olah et al. "
                                   "2017; maco: Fel et al. 2023; accentuate: Hamblin et al. 2024), batched across "
                                   "units and seeds.")
    a.add_model(p)
    a.add_device(p)
    a.add_layers(p, "none: required", old=("--layer",))
    p.add_argument("--units", default="all", help="'all' or e.g. 0,3,10-20 (default: all)")
    a.add_run(p, "maxes run to compare activations with (default: <unit_vis>/maxes)", old=("--maxes",))
    a.add_unit_vis_out(p)
    a.add_optimize_flags(p)
    a.add_shard(p, "compute only shard I of N (the last shard to finish merges); or launch with torchrun")
    a.add_force(p, "recompute complete layers, and replace optimized images made with other settings")
    a.add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.pipeline.distributed import setup
    from dvis.pipeline.precompute import default_run_dir, format_opt_summary, run_optimize_step, unit_vis_root

    if not args.layers:
        raise DvisError("give --layers: the layers whose units to optimize (comma-separated, or all)")
    shard, device = setup(args.device, args.shard)
    model = a.load_model_from(args, device)
    root = unit_vis_root(model, args.out)
    layers = a.parse_layers(args.layers, model)
    units = parse_units(args.units)
    run_dir = Path(args.run) if args.run else default_run_dir(root)
    settings = a.opt_settings(args)
    for layer in layers:
        summary = run_optimize_step(model, layer, root, settings, units, run_dir, args.force,
                                    not args.quiet and shard.main, shard)
        if summary or shard.main and not shard.files:
            print(format_opt_summary(summary) if summary else f"optimize {layer}: already complete")
        elif shard.files:
            print(f"optimize {layer}: shard {shard.rank}/{shard.world} done; the last shard to finish writes it")
    shard.close()
    return 0
