#!/usr/bin/env python
"""Train the embedded default model (ZF-style CNN) on CIFAR-10 and write models/zf-cifar10/.

    python scripts/train_cifar10.py --data ../shared/datasets/cifar10-jpg.tar.gz --out models/zf-cifar10
    python scripts/train_cifar10.py --data DATA --out models/zf-cifar10 --eval-only

DATA is a folder or .tar(.gz) holding train/<class>/*.jpg and test/<class>/*.jpg; with
--download torchvision's CIFAR10 is fetched instead.  Batch-norm is used while training and
folded into the conv weights before anything is written, so every shipped file (weights.pt and
checkpoints/epoch-NNN.pt) is a plain conv/ReLU/pool/fc net loadable by dvis.nets.zf_cifar10().
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dvis.models.fold import fold_batchnorm
from dvis.imaging.folder_arrays import load_split
from dvis.nets.zf_cifar import zf_cifar10

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
KEEP_EPOCHS = (1, 2, 5, 10, 20)


def load_data(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    if args.download:
        from torchvision.datasets import CIFAR10

        tr = CIFAR10(args.data, train=True, download=True)
        te = CIFAR10(args.data, train=False, download=True)
        return tr.data, np.array(tr.targets), te.data, np.array(te.targets), tr.classes
    cache = Path(args.cache) if args.cache else None
    if cache and cache.exists():
        z = np.load(cache)
        return z["xtr"], z["ytr"], z["xte"], z["yte"], list(z["classes"])
    xtr, ytr, classes, _ = load_split(args.data, "train")
    xte, yte, _, _ = load_split(args.data, "test")
    if cache:
        np.savez(cache, xtr=xtr, ytr=ytr, xte=xte, yte=yte, classes=np.array(classes))
    return xtr, ytr, xte, yte, classes


def to_tensor(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((t - mean) / std).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with reflect padding and horizontal flip, batched by gathering shifted windows."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    xp = xp.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = xp.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def evaluate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    net.eval()
    correct = sum((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def save_plain(net: torch.nn.Module, path: Path, half: bool = False) -> None:
    plain = fold_batchnorm(net.eval())
    sd = {k: (v.half() if half else v).contiguous() for k, v in plain.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(sd, tmp)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder or .tar(.gz) with train/ and test/")
    ap.add_argument("--out", default="models/zf-cifar10", help="model folder to write")
    ap.add_argument("--download", action="store_true", help="use torchvision's CIFAR10 (needs internet)")
    ap.add_argument("--cache", help="optional .npz to cache decoded arrays")
    ap.add_argument("--epochs", type=int, default=25, help="epochs (25 gave the shipped model)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU (faster where supported)")
    ap.add_argument("--eval-only", action="store_true", help="evaluate OUT/weights.pt on the test split")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    dev = torch.device(args.device)

    xtr, ytr, xte, yte, classes = load_data(args)
    xte_t, yte_t = to_tensor(xte).to(dev), torch.from_numpy(yte).to(dev)
    if args.eval_only:
        net = zf_cifar10(num_classes=len(classes))
        net.load_state_dict({k: v.float() for k, v in torch.load(out / "weights.pt").items()})
        print(f"top-1 on {len(yte)} test images: {evaluate(net.to(dev), xte_t, yte_t):.4f}")
        return

    xtr_t, ytr_t = to_tensor(xtr), torch.from_numpy(ytr)
    net = zf_cifar10(num_classes=len(classes), batch_norm=True).to(dev).to(memory_format=torch.channels_last)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps = args.epochs * (len(xtr_t) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(args.seed)
    log = []
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        net.train()
        perm = torch.randperm(len(xtr_t), generator=gen)
        nb = len(perm) // args.batch_size
        bar = tqdm(range(nb), desc=f"epoch {epoch}/{args.epochs}", leave=False)
        tot_loss = tot_ok = seen = 0
        for b in bar:
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            xb, yb = augment(xtr_t[idx], gen).to(dev), ytr_t[idx].to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = net(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(yb)
            tot_ok += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
            bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{tot_ok / seen:.3f}")
        acc = evaluate(net, xte_t, yte_t)
        elapsed = time.time() - t0
        log.append({"epoch": epoch, "train_loss": tot_loss / seen, "train_acc": tot_ok / seen, "test_acc": acc, "seconds": elapsed})
        print(f"epoch {epoch}: loss {tot_loss / seen:.3f} train {tot_ok / seen:.4f} test {acc:.4f} ({elapsed:.0f}s)", flush=True)
        if epoch in KEEP_EPOCHS or epoch == args.epochs:
            save_plain(net, out / "checkpoints" / f"epoch-{epoch:03d}.pt", half=True)
        save_plain(net, out / "weights.pt")
        (out / "train_log.json").write_text(json.dumps({"args": vars(args), "classes": classes, "epochs": log}, indent=1))
    print(f"final top-1 {log[-1]['test_acc']:.4f} after {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
