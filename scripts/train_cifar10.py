#!/usr/bin/env python
"""Train one of the shipped CIFAR-10 models and write its model folder.

    python scripts/train_cifar10.py --arch zf --data ../shared/datasets/cifar10-jpg.tar.gz --out models/zf-cifar10
    python scripts/train_cifar10.py --arch resnet --data DATA --out models/resnet-cifar10 --bf16
    python scripts/train_cifar10.py --arch vit --data DATA --out models/vit-cifar10 --device cuda
    python scripts/train_cifar10.py --out models/vit-cifar10 --data DATA --eval-only    # metrics.json again

``--arch`` picks the net (``dvis.nets``) and its recipe:

* ``zf``: the ZF-style CNN (:mod:`dvis.nets.zf_cifar`), SGD; batch norm is used while training and
  folded into the convs before anything is written, so every shipped file is a plain conv/ReLU/pool/fc
  net (this is how zf-cifar10 was trained);
* ``resnet``: a CIFAR ResNet of torchvision ``BasicBlock``s (:mod:`dvis.nets.resnet_cifar`), SGD;
* ``convnext``: torchvision's ``ConvNeXt`` with a 2x2 stem (:mod:`dvis.nets.convnext_cifar`), AdamW;
* ``vit``: torchvision's ``VisionTransformer``, image 32, patch 4 (:mod:`dvis.nets.vit_cifar`), AdamW.

Batch norm, LayerNorm and GELU of the last three are shipped as trained. ``--net-args '{"widths": [8, 16]}'``
passes keyword arguments to the net's factory (they go into model.yaml's ``args``).

DATA is a folder or .tar(.gz) holding train/<class>/*.jpg and test/<class>/*.jpg; with --download
torchvision's CIFAR10 is fetched instead. OUT receives weights.pt, labels.txt, model.yaml (the layers
dvis shows: chw stages, hwc block internals, tokens with the class token, pooled vectors, the classifier
last), train_log.json (per-epoch figures, and the time and machine of each session), checkpoints/
epoch-NNN.pt (fp16, 4-6 epochs along training, for ``dvis evolution`` and the toolbox's ``v`` key)
and, at the end, metrics.json (top-1, top-5 and per-class top-1 on the test split, as ``dvis evaluate``
writes it).

Resuming: after every epoch the whole training state (net, optimizer, schedule, random generators,
log) is saved to OUT/.train_state.pt (a dot file: the wheel leaves it out). A later run with the same
OUT continues from it, so training can run in the background across sessions (``--session-epochs N``
stops after N epochs, to fit a session's time); ``--resume`` insists
on a state to resume, ``--restart`` ignores it. The state's run (arch, net args, recipe) wins over the
command line's; a different ``--arch`` is an error.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from dvis.formats.atomic import atomic_write_text
from dvis.imaging.folder_arrays import load_split
from dvis.models.fold import fold_batchnorm

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
STATE = ".train_state.pt"


@dataclass(frozen=True)
class Recipe:
    """An architecture's training recipe (each field a command-line default)."""

    optimizer: str  # "sgd" (Nesterov momentum 0.9) or "adamw"
    epochs: int
    lr: float  # the one-cycle schedule's peak
    weight_decay: float  # not on biases and norm weights
    batch_size: int = 256
    warmup: float = 0.2  # share of the steps rising to the peak
    label_smoothing: float = 0.1


@dataclass(frozen=True)
class Arch:
    """A shipped net: its factory (``module:function`` in dvis.nets), layer list and recipe."""

    factory: str
    layers: str
    recipe: Recipe
    fold: bool = False  # train with batch norm, ship it folded (zf)


ARCHS = {
    "zf": Arch("dvis.nets.zf_cifar:zf_cifar10", "zf_cifar10_layers", Recipe("sgd", 25, 0.1, 5e-4), fold=True),
    "resnet": Arch("dvis.nets.resnet_cifar:resnet_cifar", "resnet_cifar_layers", Recipe("sgd", 40, 0.1, 5e-4)),
    "convnext": Arch("dvis.nets.convnext_cifar:convnext_cifar", "convnext_cifar_layers",
                     Recipe("adamw", 60, 2e-3, 0.05, batch_size=128, warmup=0.1)),
    "vit": Arch("dvis.nets.vit_cifar:vit_cifar", "vit_cifar_layers", Recipe("adamw", 100, 1e-3, 0.05, warmup=0.1)),
}


def _resolve(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def build_net(arch: str, net_args: dict, num_classes: int, training: bool = False) -> torch.nn.Module:
    """The net of ``arch``; zf's training net has batch norm (folded away before saving)."""
    extra = {"batch_norm": True} if training and ARCHS[arch].fold else {}
    return _resolve(ARCHS[arch].factory)(num_classes=num_classes, **net_args, **extra)


def checkpoint_epochs(epochs: int) -> list[int]:
    """The epochs whose weights are kept (4-6 along training, early ones dense): 1, 2, a fifth, two
    fifths, four fifths and the last (25 epochs: 1, 2, 5, 10, 20, 25)."""
    return sorted({e for e in (1, 2, round(epochs / 5), round(2 * epochs / 5), round(4 * epochs / 5), epochs) if 1 <= e <= epochs})


def machine() -> dict:
    """Where this session trains: CPU model and cores, torch threads, GPU, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "system": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


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
    """Random crop with reflect padding and horizontal flip, batched by gathering shifted windows (on
    ``x``'s device; the random numbers come from the CPU generator ``gen``, the same on any device)."""
    n, _, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev)[None]).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    xp = xp.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=dev)[None]).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = xp.gather(3, cols)
    flip = (torch.rand(n, generator=gen) < 0.5).to(dev)
    out[flip] = out[flip].flip(3)
    return out.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def evaluate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dev: torch.device, batch: int = 1000) -> float:
    net.eval()
    correct = sum((net(x[i:i + batch].to(dev)).argmax(1).cpu() == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def shipped_state(net: torch.nn.Module, fold: bool, half: bool = False) -> dict:
    """The state_dict that is written: batch norm folded for zf, fp16 for checkpoints."""
    net = fold_batchnorm(net.eval()) if fold else net
    return {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous() for k, v in net.state_dict().items()}


def save_torch(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def write_model_yaml(out: Path, run: dict, classes: list[str], layers: list[str], checkpoints: list[str]) -> None:
    """model.yaml naming the net's factory, its args, the normalization, layers and checkpoints."""
    arch = ARCHS[run["arch"]]
    spec = {"name": out.name, "architecture": arch.factory, "args": {"num_classes": len(classes), **run["net_args"]}}
    spec.update({"weights": "weights.pt", "input_size": [32, 32], "channels": 3, "mean": list(MEAN), "std": list(STD),
                 "labels": "labels.txt", "layers": layers, "unit_vis": "unit_vis", "checkpoints": checkpoints})
    head = (f"# {out.name}: {run['arch']} trained on CIFAR-10 by scripts/train_cifar10.py --arch {run['arch']}"
            f" (figures in train_log.json and metrics.json).\n")
    head += ("# Batch norm is folded into the convs.\n" if arch.fold else
             "# Normalizations and activations are kept as trained (not folded).\n")
    atomic_write_text(out / "model.yaml", head + yaml.safe_dump(spec, sort_keys=False))


def write_metrics(out: Path, data: str, workers: int = 0) -> dict:
    """metrics.json as ``dvis evaluate --json`` writes it (top-1, top-5, per-class top-1 on test/)."""
    from dvis.models.evaluate import evaluate_split
    from dvis.models.loading import load_model

    metrics = evaluate_split(load_model(out), data, "test", workers=workers)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="zf", help="the net and recipe (default zf)")
    ap.add_argument("--data", required=True, help="dataset folder or .tar(.gz) with train/ and test/")
    ap.add_argument("--out", help="model folder to write (default models/<arch>-cifar10)")
    ap.add_argument("--net-args", default="{}", help="JSON keyword arguments for the net's factory")
    ap.add_argument("--download", action="store_true", help="use torchvision's CIFAR10 (needs internet)")
    ap.add_argument("--cache", help="optional .npz to cache decoded arrays")
    ap.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float, help="peak learning rate of the one-cycle schedule")
    ap.add_argument("--weight-decay", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU with AVX512-BF16, or GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--session-epochs", type=int, help="train at most this many epochs now, then stop (resume later)")
    ap.add_argument("--workers", type=int, default=0, help="decoding workers of the final evaluation")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue OUT/.train_state.pt (an error without one)")
    mode.add_argument("--restart", action="store_true", help="start over even if OUT has a training state")
    mode.add_argument("--eval-only", action="store_true", help="evaluate OUT on the test split, write metrics.json")
    args = ap.parse_args(argv)
    args.out = args.out or f"models/{args.arch}-cifar10"
    return args


def new_run(args: argparse.Namespace) -> dict:
    """The run a fresh start trains: arch, net args and the recipe with the command line's overrides."""
    recipe = asdict(ARCHS[args.arch].recipe)
    for key in ("epochs", "batch_size", "lr", "weight_decay"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    try:
        net_args = json.loads(args.net_args)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--net-args: not JSON ({exc})") from exc
    if not isinstance(net_args, dict):
        raise SystemExit(f"--net-args: expected a JSON object, got {args.net_args}")
    return {"arch": args.arch, "net_args": net_args, "recipe": recipe, "seed": args.seed}


def make_optimizer(net: torch.nn.Module, recipe: dict, steps: int):
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=recipe["lr"], momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=recipe["lr"], betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=recipe["warmup"],
                                                cycle_momentum=recipe["optimizer"] == "sgd")
    return opt, sched


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    dev = torch.device(args.device)
    if args.eval_only:
        m = write_metrics(out, args.data, args.workers)
        print(f"top-1 {m['top1']:.4f}, top-5 {m['top5']:.4f} on {m['images']} test images -> {out / 'metrics.json'}")
        return 0

    state_path = out / STATE
    state = None
    if state_path.exists() and not args.restart:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["run"]["arch"] != args.arch:
            raise SystemExit(f"{state_path} trains --arch {state['run']['arch']}, not {args.arch}: "
                             f"give that arch, another --out, or --restart")
    elif args.resume:
        raise SystemExit(f"--resume: no training state {state_path} to resume")
    run = state["run"] if state else new_run(args)
    recipe, arch = run["recipe"], ARCHS[run["arch"]]
    epochs = recipe["epochs"]
    torch.manual_seed(run["seed"])

    xtr, ytr, xte, yte, classes = load_data(args)
    xtr_t, ytr_t = to_tensor(xtr).to(dev), torch.from_numpy(ytr).to(dev)  # on a GPU: 600 MB, augmented there
    xte_t, yte_t = to_tensor(xte), torch.from_numpy(yte)
    net = build_net(run["arch"], run["net_args"], len(classes), training=True).to(dev).to(memory_format=torch.channels_last)
    batch = min(recipe["batch_size"], len(xtr_t))
    per_epoch = len(xtr_t) // batch
    opt, sched = make_optimizer(net, recipe, epochs * per_epoch)
    gen = torch.Generator().manual_seed(run["seed"])
    log, sessions, trained_s, start = [], [], 0.0, 1
    if state:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        log, sessions, trained_s, start = state["log"], state["sessions"], state["seconds"], state["epoch"] + 1
        print(f"resuming {out} at epoch {start}/{epochs} ({trained_s:.0f}s trained so far)", flush=True)
    session = {"started": _now(), "machine": machine(), "device": str(dev), "bf16": args.bf16, "first_epoch": start}
    if start <= epochs:
        sessions.append(session)
    keep = checkpoint_epochs(epochs)
    layers = _resolve(arch.factory.split(":")[0] + ":" + arch.layers)(net)

    stop = epochs if args.session_epochs is None else min(epochs, start - 1 + args.session_epochs)
    for epoch in range(start, stop + 1):
        t0 = time.time()
        net.train()
        perm = torch.randperm(len(xtr_t), generator=gen)
        tot_loss = tot_ok = seen = 0
        bar = tqdm(range(per_epoch), desc=f"epoch {epoch}/{epochs}", leave=False)
        for b in bar:
            idx = perm[b * batch:(b + 1) * batch].to(dev)
            xb, yb = augment(xtr_t[idx], gen), ytr_t[idx]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = net(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=recipe["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(yb)
            tot_ok += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
            bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{tot_ok / seen:.3f}")
        acc = evaluate(net, xte_t, yte_t, dev)
        trained_s += time.time() - t0
        log.append({"epoch": epoch, "train_loss": tot_loss / seen, "train_acc": tot_ok / seen, "test_acc": acc,
                    "seconds": trained_s})
        print(f"epoch {epoch}: loss {tot_loss / seen:.3f} train {tot_ok / seen:.4f} test {acc:.4f} ({trained_s:.0f}s)", flush=True)
        if epoch in keep:
            save_torch(shipped_state(net, arch.fold, half=True), out / "checkpoints" / f"epoch-{epoch:03d}.pt")
        save_torch(shipped_state(net, arch.fold), out / "weights.pt")
        atomic_write_text(out / "labels.txt", "".join(f"{c}\n" for c in classes))
        kept = [f"checkpoints/epoch-{e:03d}.pt" for e in keep if e <= epoch]
        write_model_yaml(out, run, classes, layers, kept)
        session.update(ended=_now(), last_epoch=epoch)
        atomic_write_text(out / "train_log.json", json.dumps(
            {"args": {**vars(args), **run["recipe"], "arch": run["arch"], "net_args": run["net_args"]}, "classes": classes,
             "seconds": trained_s, "sessions": sessions, "epochs": log}, indent=1) + "\n")
        save_torch({"run": run, "epoch": epoch, "net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "log": log, "sessions": sessions,
                    "seconds": trained_s}, state_path)
    if stop < epochs:
        print(f"stopped after epoch {stop}/{epochs}: run again to resume from {state_path}")
        return 0
    if start > epochs:
        print(f"{out} is trained ({epochs} epochs): writing its metrics again; --restart to train again", file=sys.stderr)
    m = write_metrics(out, args.data, args.workers)
    print(f"top-1 {m['top1']:.4f}, top-5 {m['top5']:.4f} on {m['images']} test images after {trained_s:.0f}s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
