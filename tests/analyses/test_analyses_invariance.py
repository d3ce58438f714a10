"""dvis.analyses.invariance and ``dvis invariance``."""
import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from helpers.analyses import assert_png, run_cli, tiny_model_folder, write_images
from dvis.analyses.invariance import affine_thetas, default_amounts, invariance_sweep, transform_images
from dvis.errors import DvisError

STRIDE = 4


def strided_sum_net() -> nn.Sequential:
    """A stride-4 conv followed by global average pooling: exactly invariant to shifts by multiples of 4
    of content that stays inside the image, not to other shifts."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, stride=STRIDE)
    fc = nn.Linear(3, 2)
    return nn.Sequential(OrderedDict(conv=conv, gap=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=fc)).eval()


def centred_content(n: int = 2) -> torch.Tensor:
    x = torch.zeros(n, 1, 32, 32)
    x[:, :, 10:22, 8:24] = torch.rand(n, 1, 12, 16, generator=torch.Generator().manual_seed(1))
    return x


def test_integer_translation_is_an_exact_shift_with_mean_fill():
    x = torch.rand(1, 3, 8, 8)
    shifted = transform_images(x.expand(2, -1, -1, -1), affine_thetas("translate", [2, -3], 8, 8))
    down = torch.zeros_like(x)
    down[..., 2:, :] = x[..., :-2, :]
    up = torch.zeros_like(x)
    up[..., :-3, :] = x[..., 3:, :]
    torch.testing.assert_close(shifted, torch.cat([down, up]), atol=1e-5, rtol=0)


def test_identity_amounts_and_quarter_turns():
    x = torch.rand(1, 3, 8, 8)
    same = transform_images(x.expand(3, -1, -1, -1), torch.cat([affine_thetas("translate", [0], 8, 8),
                                                                affine_thetas("scale", [1], 8, 8),
                                                                affine_thetas("rotate", [0], 8, 8)]))
    torch.testing.assert_close(same, x.expand(3, -1, -1, -1), atol=1e-5, rtol=0)
    turned = transform_images(x, affine_thetas("rotate", [90], 8, 8))
    torch.testing.assert_close(turned, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)  # counter-clockwise


def test_net_invariant_at_its_stride_gives_zero_distance_there():
    shifts = [-8, -4, -2, -1, 0, 1, 2, 4, 8]
    sweep = invariance_sweep(strided_sum_net(), centred_content(), ["conv", "gap", "fc"], "translate", shifts,
                             rectify=False, batch_size=5)
    gap = sweep.distances["gap"]
    assert gap.shape == (2, len(shifts))
    at_stride = [shifts.index(s) for s in (-8, -4, 0, 4, 8)]
    off_stride = [shifts.index(s) for s in (-2, -1, 1, 2)]
    assert gap[:, at_stride].abs().max() < 1e-5
    assert gap[:, off_stride].min() > 1e-3
    # The conv map itself moves with the content, so only the pooled layers are invariant.
    assert sweep.distances["conv"][:, shifts.index(4)].min() > 1e-2
    assert torch.allclose(sweep.probs[:, at_stride], sweep.probs[:, [shifts.index(0)]].expand(-1, 5), atol=1e-5)


def test_targets_select_the_probability():
    net, x = strided_sum_net(), centred_content()
    a = invariance_sweep(net, x, ["gap"], "rotate", [0, 90], targets=[0, None])
    b = invariance_sweep(net, x, ["gap"], "rotate", [0, 90], targets=[1, 1])
    torch.testing.assert_close(a.probs[0] + b.probs[0], torch.ones(2))
    assert a.targets.tolist()[0] == 0
    with pytest.raises(DvisError, match="2 images"):
        invariance_sweep(net, x, ["gap"], "rotate", [0], targets=[0])


def test_bad_arguments():
    net, x = strided_sum_net(), centred_content()
    with pytest.raises(DvisError, match="unknown transform"):
        invariance_sweep(net, x, ["gap"], "shear", [1])
    with pytest.raises(DvisError, match="positive"):
        affine_thetas("scale", [0], 8, 8)
    with pytest.raises(DvisError, match="conv9"):
        invariance_sweep(net, x, ["conv9"], "scale", [1])
    assert default_amounts("translate", 32) == [float(s) for s in range(-8, 9)]


def test_command_writes_figure_and_numbers(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path, checkpoints=0)
    write_images(tmp_path / "imgs", ["cifar_cat_0000.png", "cifar_ship_0001.png"])
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(capsys, "invariance", "--model", folder, "--images", tmp_path / "imgs",
                            "--layers", "conv1,fc7", "--out", out)
    assert rc == 0 and "rotate" in stdout
    assert_png(out / "invariance.png")
    numbers = json.loads((out / "invariance.json").read_text())
    assert [s["kind"] for s in numbers["sweeps"]] == ["translate", "scale", "rotate"]
    trans = numbers["sweeps"][0]
    assert trans["targets"] == [3, 8]  # from the file names
    zero = trans["amounts"].index(0.0)
    assert all(abs(trans["mean_distance"][k][zero]) < 1e-5 for k in ("conv1", "fc7"))
    assert len(trans["true_prob"]) == 2 and len(trans["true_prob"][0]) == len(trans["amounts"])


def test_command_bad_layer_is_one_line(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path, checkpoints=0)
    write_images(tmp_path / "imgs", ["a.png"])
    rc, _, err = run_cli(capsys, "invariance", "--model", folder, "--images", tmp_path / "imgs", "--layers", "fc99",
                         "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and "fc99" in err
