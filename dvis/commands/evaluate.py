"""``dvis evaluate``: top-1 / top-5 accuracy of a model on a labelled image-folder dataset."""
from __future__ import annotations

import argparse
import json

from dvis.commands import args as a


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="top-1/top-5 accuracy on a labelled image folder or .tar(.gz)",
                       description="Classify SPLIT/<class>/* images of DATA (folder or .tar/.tar.gz) and report "
                                   "top-1/top-5 accuracy; class folders are matched to the model's labels by name.")
    a.add_model(p)
    a.add_device(p)
    p.add_argument("--data", required=True, help="dataset folder or .tar(.gz) holding SPLIT/<class>/*")
    p.add_argument("--split", default="test", help="split folder name (default: test)")
    a.add_batch_size(p, 256, "images per forward pass")
    p.add_argument("--json", help="also write the result (with per-class accuracy) to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvis.formats.atomic import atomic_write_text
    from dvis.models.evaluate import evaluate_split

    model = a.load_model_from(args)
    result = evaluate_split(model, args.data, args.split, args.batch_size)
    print(f"{result['model']}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} on {result['images']} "
          f"'{args.split}' images of {args.data} ({result['skipped']} skipped as unreadable)")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0
