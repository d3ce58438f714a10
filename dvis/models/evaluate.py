"""Top-1 / top-5 accuracy of a model on a labelled image-folder dataset (``dvis evaluate``)."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from dvis.errors import DvisError
from dvis.imaging.datasets import ImageDataset, open_source
from dvis.imaging.decode import load_batches
from dvis.imaging.labels import class_folder


def evaluate_split(model, source: str | Path, split: str, batch_size: int = 256, workers: int = 0) -> dict:
    """Classify every image of ``source/split/<class>/*`` (a folder or tar, read by
    :func:`dvis.imaging.datasets.open_source`); classes are matched to ``model.labels`` by name.
    Unreadable images are skipped with one warning each and counted in ``skipped``."""
    if not model.labels:
        raise DvisError(f"model '{model.name}' has no labels file; cannot score a labelled dataset")
    index = {name: i for i, name in enumerate(model.labels)}
    images = open_source(source)
    chosen, classes = [], []
    for i, name in enumerate(images.names):
        cls = class_folder(name, split)  # .../SPLIT/<class>/<file>
        if cls is not None:
            if cls not in index:
                raise DvisError(f"class folder '{cls}' is not among the labels of model '{model.name}'")
            chosen.append(i)
            classes.append(index[cls])
    if not chosen:
        raise DvisError(f"no images under '{split}/<class>/' in {source}")
    label_of = dict(zip(chosen, classes))
    loader = load_batches(ImageDataset(images, model.input_size, model.channels), model.device,
                          batch_size=batch_size, sampler=chosen, num_workers=workers)
    hits1, hits5, ys = [], [], []
    with torch.inference_mode():
        for x, ok, idx in tqdm(loader, desc=f"evaluate {model.name}", unit="batch", total=-(-len(chosen) // batch_size)):
            x, idx = x[ok], idx[ok]
            if not len(idx):
                continue
            logits = model.net(model.normalize(x.to(model.device).float().div_(255)))
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
            y = torch.tensor([label_of[int(i)] for i in idx])
            hits1.append(top[:, 0] == y)
            hits5.append((top == y[:, None]).any(1))
            ys.append(y)
    total = sum(len(y) for y in ys)
    if not total:
        raise DvisError(f"no readable images under '{split}/<class>/' in {source}")
    hit1, hit5, y = torch.cat(hits1), torch.cat(hits5), torch.cat(ys)
    per_class = torch.bincount(y[hit1], minlength=len(model.labels)) / torch.bincount(y, minlength=len(model.labels)).clamp_min(1)
    seen = torch.unique(y).tolist()
    return {
        "model": model.name, "split": split, "images": total, "skipped": len(chosen) - total,
        "top1": float(hit1.float().mean()), "top5": float(hit5.float().mean()),
        "per_class_top1": {model.labels[c]: float(per_class[c]) for c in sorted(seen, key=lambda c: model.labels[c])},
    }
