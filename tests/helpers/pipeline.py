"""Shared fixtures of the pipeline tests: a tiny model folder and generated images whose correct
top-k, positions and crop boxes are known by construction."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIZE = 16

NET_CODE = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        """conv1 unit 0 sums the 3x3 neighbourhood of all channels (a bright-blob detector), unit 1
        is its negative; conv2 and fc read those maps with fixed weights (fc unit 3 negated)."""
        net = nn.Sequential()
        net.add_module("conv1", nn.Conv2d(3, 2, 3, padding=1))
        net.add_module("relu1", nn.ReLU())
        net.add_module("pool1", nn.MaxPool2d(2))
        net.add_module("conv2", nn.Conv2d(2, 3, 3, padding=1))
        net.add_module("relu2", nn.ReLU())
        net.add_module("flatten", nn.Flatten())
        net.add_module("fc", nn.Linear(3 * 8 * 8, 4))
        net.add_module("relu3", nn.ReLU(inplace=True))  # must not rectify the recorded fc values
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            net.conv1.weight.zero_()
            net.conv1.weight[0] = 1.0
            net.conv1.weight[1] = -1.0
            net.conv1.bias.zero_()
            net.conv2.weight.copy_(torch.rand(net.conv2.weight.shape, generator=g))
            net.conv2.bias.zero_()
            net.fc.weight.copy_(torch.rand(net.fc.weight.shape, generator=g))
            net.fc.bias.zero_()
            net.fc.weight[3] *= -1  # fc unit 3 is negative on every image
        return net
''')


def make_model(folder: Path) -> Path:
    """A model folder (model.yaml, net code, weights file) for the tiny blob net; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.py").write_text(NET_CODE)
    ns: dict = {}
    exec(NET_CODE, ns)
    torch.save(ns["build"]().state_dict(), folder / "weights.pt")
    (folder / "model.yaml").write_text(textwrap.dedent(f'''
        name: tiny-blob
        architecture: tiny.py:build
        weights: weights.pt
        input_size: [{SIZE}, {SIZE}]
        layers: [conv1, pool1, conv2, fc]
    '''))
    return folder


def blob_specs(n: int) -> list[tuple[int, int, int]]:
    """(brightness, y, x) of image i's 3x3 white-ish blob; brightness grows with i except that
    images 4 and 5 tie (to check tie-breaking), and blobs also touch the borders."""
    rng = np.random.default_rng(0)
    specs = []
    for i in range(n):
        b = 60 + 4 * i if i != 5 else 60 + 4 * 4
        y, x = (int(v) for v in rng.integers(0, SIZE, 2))
        specs.append((b, y, x))
    return specs


def blob_image(b: int, y: int, x: int) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = b
    return img


def make_images(folder: Path, n: int = 24, bad: bool = False) -> list[tuple[int, int, int]]:
    """Write n lossless blob images (in two class subfolders) and, with ``bad``, a zero-byte, a
    corrupt and a non-image file named like images. Returns the blob specs in natural order."""
    folder = Path(folder)
    specs = blob_specs(n)
    for i, (b, y, x) in enumerate(specs):
        sub = folder / ("a" if i < n // 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(blob_image(b, y, x)).save(sub / f"img{i:03d}.png")
    if bad:
        (folder / "b" / "zz_empty.png").write_bytes(b"")
        (folder / "b" / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0not a jpeg at all")
        (folder / "b" / "zz_text.png").write_text("hello")
    return specs


def expected_conv1_top(specs, k: int) -> list[int]:
    """Image indices conv1 unit 0 ranks first: the blob's 3x3 sum (clipped at borders), ties by index."""
    sums = []
    for b, y, x in specs:
        img = blob_image(b, y, x).astype(np.float64) / 255
        pad = np.pad(img.sum(2), 1)
        best = max(pad[r:r + 3, c:c + 3].sum() for r in range(SIZE) for c in range(SIZE))
        sums.append(best)
    return sorted(range(len(specs)), key=lambda i: (-sums[i], i))[:k]


def env_with_models(folder: Path) -> dict:
    env = dict(os.environ)
    env["DVIS_MODELS"] = str(folder)
    return env


REPO = Path(__file__).resolve().parents[2]
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dvis")


def dvis_cli(args: list[str], env: dict, timeout: float = 180,
             prefix: tuple[str, ...] = (sys.executable, "-m", "dvis")) -> subprocess.CompletedProcess:
    """Run the dvis command from the checkout (``prefix=TORCHRUN`` for 2 gloo processes)."""
    return subprocess.run(list(prefix) + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def maxes_three_ways(common: list[str], out: Path, env: dict) -> str:
    """`dvis maxes` into out/one, as two --shard parts merged into out/sharded, and under a 2-process torchrun into
    out/dist; returns the one-process stdout."""
    r = dvis_cli(["maxes", *common, "--run-dir", str(out / "one")], env)
    assert r.returncode == 0, r.stderr
    for i in range(2):
        s = dvis_cli(["maxes", *common, "--run-dir", str(out / "sharded"), "--shard", f"{i}/2"], env)
        assert s.returncode == 0, s.stderr
    m = dvis_cli(["maxes-merge", "--run-dir", str(out / "sharded")], env)
    assert m.returncode == 0, m.stderr
    d = dvis_cli(["maxes", *common, "--run-dir", str(out / "dist")], env, timeout=240, prefix=TORCHRUN)
    assert d.returncode == 0, d.stderr[-2000:]
    return r.stdout
