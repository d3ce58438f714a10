"""Model folders with a layer of every layout (chw, hwc, tokens with a class token, partitioned,
vector), in colour at a square size and in grayscale at a non-square one."""
from __future__ import annotations

import pytest
from helpers.layout_modules import SOURCE

from dvis.models.loading import load_model

LAYOUT_NET = SOURCE + '''

class Net(nn.Module):
    def __init__(self, channels):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(channels, 4, 3, padding=1)
        self.to_hwc = Permute(0, 2, 3, 1)
        self.mlp = nn.Linear(4, 6)  # on channels-last maps, as in ConvNeXt blocks
        self.to_chw = Permute(0, 3, 1, 2)
        self.pool = nn.MaxPool2d(2)
        self.tokens = Tokens(6)
        self.attn = nn.Linear(6, 6)  # on tokens, class token first (as in ViT)
        self.windows = Windows(2)
        self.win = nn.Linear(6, 5)  # on window partitions (MaxViT, Swin)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = self.pool(self.to_chw(self.mlp(self.to_hwc(self.conv1(x)))))
        t = self.tokens(x)
        t = self.attn(t + t.mean(1, keepdim=True))  # the class token sees the image
        w = self.win(self.windows(x))
        return self.head(t[:, 0]) + w.reshape(x.shape[0], -1, w.shape[-1]).mean(1)


def build(channels=3):
    return Net(channels)


def build_gray():
    return Net(1)
'''


def layout_model(root, gray: bool):
    (root / "net.py").write_text(LAYOUT_NET)
    size, channels, build = ("[12, 16]", 1, "build_gray") if gray else ("[16, 16]", 3, "build")
    (root / "model.yaml").write_text(f"name: layouts\narchitecture: net.py:{build}\nweights: none\n"
                                     f"input_size: {size}\nchannels: {channels}\nmean: 0.5\nstd: 0.25\n")
    return load_model(str(root))


@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    return layout_model(tmp_path_factory.mktemp("layouts"), gray=False)


@pytest.fixture(scope="session")
def layouts_gray(tmp_path_factory):
    return layout_model(tmp_path_factory.mktemp("layouts_gray"), gray=True)
