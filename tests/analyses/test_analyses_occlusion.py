"""dvis.analyses.occlusion and ``dvis occlusion``."""
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.analyses import LABELS, assert_png, run_cli, tiny_model_folder
from dvis.analyses.occlusion import occluder_grid, occlusion_maps, plot_occlusion, upsample_map
from dvis.errors import DvisError

SIZE = 16
REGION = (slice(6, 10), slice(6, 10))  # the only informative 4x4 region


def region_net(classes: int = 4) -> nn.Sequential:
    """Class 0's logit is 10x the sum of the input inside REGION; every other logit is 0."""
    conv = nn.Conv2d(3, 1, 1)
    fc = nn.Linear(SIZE * SIZE, classes)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        fc.weight.zero_()
        fc.bias.zero_()
        fc.weight[0].view(SIZE, SIZE)[REGION] = 10.0
    return nn.Sequential(OrderedDict(conv1=conv, flatten=nn.Flatten(), fc=fc)).eval()


def region_image() -> torch.Tensor:
    x = torch.zeros(1, 3, SIZE, SIZE)
    x[..., REGION[0], REGION[1]] = 1.0
    return x


def test_occluding_the_only_informative_region_drops_to_chance():
    maps = occlusion_maps(region_net(), region_image(), size=4, stride=1, layer="conv1")
    assert maps.target == 0 and maps.base_probs[0] > 0.999
    assert maps.target_prob.shape == (SIZE, SIZE)
    # The square centred at (8, 8) covers rows/cols 6..9: the whole region, so all logits tie.
    assert maps.target_prob[8, 8].item() == pytest.approx(0.25, abs=1e-6)
    assert maps.target_prob.min().item() == pytest.approx(0.25, abs=1e-6)
    assert maps.min_position() == (8, 8)
    # Far from the region the occluder covers only zeros: nothing changes.
    assert maps.target_prob[0, 0].item() == pytest.approx(maps.base_probs[0].item(), abs=1e-6)
    assert maps.top_class[0, 0] == 0
    # conv1 is the only map; its total activation loses exactly what the square hides.
    assert maps.unit == 0 and maps.base_activation == pytest.approx(48.0)
    assert maps.unit_activation[8, 8].item() == pytest.approx(0.0)
    assert maps.unit_activation[8, 7].item() == pytest.approx(12.0)  # one region column (4 px x 3 ch) still visible
    assert maps.unit_activation[0, 0].item() == pytest.approx(48.0)


def test_batch_size_does_not_change_the_maps():
    net, x = region_net(), torch.rand(1, 3, SIZE, SIZE)
    a = occlusion_maps(net, x, size=5, stride=3, layer="conv1", batch_size=7)
    b = occlusion_maps(net, x, size=5, stride=3, layer="conv1", batch_size=100)
    torch.testing.assert_close(a.target_prob, b.target_prob)
    torch.testing.assert_close(a.unit_activation, b.unit_activation)


def test_occluder_grid_clips_at_the_border():
    cy, cx, rows, cols = occluder_grid(10, 12, size=4, stride=3)
    assert cy.tolist() == [0, 3, 6, 9] and cx.tolist() == [0, 3, 6, 9]
    assert rows.sum(1).tolist() == [2, 4, 4, 3]
    assert rows[1].nonzero().flatten().tolist() == [1, 2, 3, 4]


def test_upsample_map_takes_the_nearest_centre():
    values = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    up = upsample_map(values, torch.tensor([0, 4]), torch.tensor([0, 4]), 8, 8)
    assert up.shape == (8, 8) and up[0, 0] == 0 and up[0, 7] == 1 and up[7, 0] == 2 and up[5, 5] == 3


def test_bad_arguments():
    net, x = region_net(), region_image()
    with pytest.raises(DvisError, match="exceeds"):
        occlusion_maps(net, x, size=SIZE + 1)
    with pytest.raises(DvisError, match="out of range"):
        occlusion_maps(net, x, layer="conv1", unit=3)
    with pytest.raises(DvisError, match="conv7"):
        occlusion_maps(net, x, layer="conv7")
    with pytest.raises(DvisError, match="one image"):
        occlusion_maps(net, x.expand(2, -1, -1, -1))


def test_plot_has_four_panels_with_a_layer():
    maps = occlusion_maps(region_net(), region_image(), size=4, stride=2, layer="conv1")
    fig = plot_occlusion(np.zeros((SIZE, SIZE, 3), np.uint8), maps, ["a", "b", "c", "d"])
    assert len(fig.axes) >= 4


def test_command_writes_figure_and_numbers(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path, checkpoints=0)
    img = tmp_path / "cifar_dog_0001.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(capsys, "occlusion", "--model", folder, "--images", img, "--size", "8", "--stride", "4",
                            "--layers", "conv2", "--out", out)
    assert rc == 0 and "p(dog)" in stdout
    assert_png(out / "occlusion-cifar_dog_0001.png")
    numbers = json.loads((out / "occlusion.json").read_text())[str(img)]
    assert numbers["target"] == LABELS.index("dog") and numbers["layer"] == "conv2"
    assert np.array(numbers["target_prob"]).shape == (8, 8)
    assert 0 <= numbers["unit"] < 8


def test_command_missing_image_is_one_line(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path, checkpoints=0)
    rc, _, err = run_cli(capsys, "occlusion", "--model", folder, "--images", tmp_path / "nope.png", "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and "nope.png" in err


def test_net_without_a_classifier_last_is_a_clear_error():
    net = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 2, 3))).eval()
    with pytest.raises(DvisError, match="not class scores"):
        occlusion_maps(net, torch.zeros(1, 3, 8, 8), size=2)
