"""``dvis evaluate``: top-1 / top-5 accuracy of a model on a labelled image-folder dataset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from dvis.errors import DvisError
from dvis.imagefolder_arrays import iter_split
from dvis.images import read_image
from dvis.model_loading import load_model


def evaluate_split(model, source: str | Path, split: str, batch_size: int = 256) -> dict:
    """Classify every image of ``source/split/<class>/*``; classes are matched to ``model.labels`` by name."""
    if not model.labels:
        raise DvisError(f"model '{model.name}' has no labels file; cannot score a labelled dataset")
    index = {name: i for i, name in enumerate(model.labels)}
    correct1 = correct5 = total = 0
    per_class: dict[str, list[int]] = {}

    def flush(xs: list[torch.Tensor], ys: list[int], names: list[str]) -> None:
        nonlocal correct1, correct5, total
        with torch.inference_mode():
            logits = model.net(torch.cat(xs))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices.cpu()
        y = torch.tensor(ys)
        hit1 = top[:, 0] == y
        correct1 += int(hit1.sum())
        correct5 += int((top == y[:, None]).any(1).sum())
        total += len(ys)
        for name, ok in zip(names, hit1.tolist()):
            per_class.setdefault(name, [0, 0])[0] += ok
            per_class[name][1] += 1

    xs, ys, names = [], [], []
    for rel, data in tqdm(iter_split(source, split), desc=f"evaluate {model.name}", unit="img"):
        cls = rel.split("/")[1]
        if cls not in index:
            raise DvisError(f"class folder '{cls}' is not among the labels of model '{model.name}'")
        xs.append(model.preprocess(read_image(data)))
        ys.append(index[cls])
        names.append(cls)
        if len(xs) == batch_size:
            flush(xs, ys, names)
            xs, ys, names = [], [], []
    if xs:
        flush(xs, ys, names)
    if not total:
        raise DvisError(f"no images under '{split}/<class>/' in {source}")
    return {
        "model": model.name, "split": split, "images": total,
        "top1": correct1 / total, "top5": correct5 / total,
        "per_class_top1": {c: ok / n for c, (ok, n) in sorted(per_class.items())},
    }


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model, device=args.device)
    result = evaluate_split(model, args.data, args.split, args.batch_size)
    print(f"{result['model']}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} on {result['images']} "
          f"'{args.split}' images of {args.data}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="top-1/top-5 accuracy on a labelled image folder or .tar(.gz)",
                       description="Classify SPLIT/<class>/* images of DATA (folder or .tar/.tar.gz) and report "
                                   "top-1/top-5 accuracy; class folders are matched to the model's labels by name.")
    p.add_argument("--model", default=None, help="model folder, model.yaml or torchvision name (default: zf-cifar10)")
    p.add_argument("--data", required=True, help="dataset folder or .tar(.gz) holding SPLIT/<class>/*")
    p.add_argument("--split", default="test", help="split folder name (default: test)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the result (with per-class accuracy) to this JSON file")
    p.set_defaults(func=run)
