"""``dvis atlas MODEL --out DIR``: a static, offline HTML site of the model's units (see dvis.atlas)."""
from __future__ import annotations

from dvis.commands import args as a


def register(sub) -> None:
    p = sub.add_parser("atlas", help="write a static HTML site of every unit (works from file://, offline)",
                       description="Build an HTML site from the model's unit images and unit statistics: an index "
                                   "of layers with search, a grid per layer and one page per unit "
                                   "(DIR/<layer>/<unit>.html). Reads the model's files only: its weights are "
                                   "not needed.")
    a.add_model(p, weights=False)
    a.add_out(p, "folder to write the site into", required=True)
    a.add_force(p, "write into a non-empty folder that is not an atlas")
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.atlas import build_atlas
    from dvis.models.loading import load_model_layout

    model = load_model_layout(args.model)  # the pages need the model's names and folders, not its weights
    r = build_atlas(model, args.out, force=args.force)
    share = r.text_bytes / r.image_bytes if r.image_bytes else float("nan")
    print(f"atlas: {r.pages} pages, HTML/JS/CSS/JSON {r.text_bytes / 1e6:.2f} MB on {r.image_bytes / 1e6:.2f} MB of "
          f"images ({share:.1%}), {r.seconds:.1f} s -> {r.out / 'index.html'}")
    return 0
