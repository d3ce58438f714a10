"""dvis.analyses.correspondence and ``dvis correspondence``."""
import json

import pytest
import torch
import yaml

from helpers.analyses import assert_png, run_cli, tiny_model_folder, write_images
from dvis.analyses.correspondence import (
    correspondence, hamming_consistency, load_spec, occlude_boxes, random_boxes, scale_boxes,
)
from dvis.errors import DvisError
from dvis.models.loading import load_model


def test_hamming_consistency_known_values():
    signs = torch.tensor([[1, 0, -1, 1], [1, 1, -1, -1], [1, 0, -1, 1]], dtype=torch.int8)
    mean, std = hamming_consistency(signs)
    # Pairs (0,1): 2 of 4 differ, (0,2): 0, (1,2): 2.
    assert mean == pytest.approx(1 / 3) and std == pytest.approx(torch.tensor([0.5, 0.0, 0.5]).std().item())
    assert hamming_consistency(signs[[0, 0]]) == (0.0, 0.0)


def test_occlude_boxes_fills_only_each_images_box():
    x = torch.ones(2, 3, 6, 6)
    out = occlude_boxes(x, torch.tensor([[0, 0, 2, 3], [4, 4, 6, 6]]), fill=-1.0)
    assert (out[0, :, :2, :3] == -1).all() and (out[1, :, 4:, 4:] == -1).all()
    assert (out == -1).sum() == 3 * (6 + 4)


def test_scale_boxes_and_outside_box_error():
    boxes = torch.tensor([[8.0, 16.0, 24.0, 40.0]])
    scaled = scale_boxes(boxes, torch.tensor([[64, 64]]), (32, 32))
    assert scaled.tolist() == [[4, 8, 12, 20]]
    with pytest.raises(DvisError, match="outside dog.png"):
        scale_boxes(torch.tensor([[0.0, 0.0, 10.0, 70.0]]), torch.tensor([[64, 64]]), (32, 32), ["dog.png"])


def test_random_boxes_stay_inside_and_differ_per_image():
    boxes = random_boxes(n=4, count=3, box_hw=(5, 7), input_size=(32, 32), seed=1)
    assert boxes.shape == (3, 4, 4)
    assert (boxes[..., 2] - boxes[..., 0] == 5).all() and (boxes[..., 3] - boxes[..., 1] == 7).all()
    assert boxes[..., :2].min() >= 0 and boxes[..., 2].max() <= 32 and boxes[..., 3].max() <= 32
    assert len({tuple(b) for b in boxes.view(-1, 4).tolist()}) > 1


def test_identical_images_give_zero_delta_for_parts(tmp_path):
    model = load_model(tiny_model_folder(tmp_path, checkpoints=0))
    x = torch.randn(1, 3, 32, 32).expand(4, -1, -1, -1).contiguous()
    parts = {"eye": torch.tensor([[8, 8, 14, 14]]).expand(4, -1), "nose": torch.tensor([[16, 12, 22, 20]]).expand(4, -1),
             "random": random_boxes(4, 3, (6, 6), (32, 32), seed=0)}
    table = correspondence(model, x, parts, ["conv2", "pool5", "fc7"], batch_size=5)
    for part in ("eye", "nose"):
        assert all(table[part][k] == (0.0, 0.0) for k in ("conv2", "pool5", "fc7"))
    # Random boxes sit at a different place in each copy, so their feature changes disagree.
    assert table["random"]["conv2"][0] > 0


def write_spec(tmp_path, box=(2, 2, 10, 10)) -> tuple:
    folder = tiny_model_folder(tmp_path, checkpoints=0)
    paths = write_images(tmp_path / "imgs", [f"dog{i}.png" for i in range(3)], size=64)
    spec = {"layers": ["conv3", "fc7"], "random": {"count": 2, "seed": 3},
            "images": [{"path": f"imgs/{p.name}", "parts": {"left_eye": list(box), "nose": [30, 20, 40, 44]}} for p in paths]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder, tmp_path / "spec.yaml"


def test_load_spec_checks_parts(tmp_path):
    _, path = write_spec(tmp_path)
    spec = load_spec(path)
    assert spec.paths[0] == tmp_path / "imgs" / "dog0.png" and spec.boxes["nose"].shape == (3, 4)
    data = yaml.safe_load(path.read_text())
    del data["images"][1]["parts"]["nose"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DvisError, match="exactly the parts"):
        load_spec(path)


def test_command_writes_table(tmp_path, capsys):
    folder, spec = write_spec(tmp_path)
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(capsys, "correspondence", "--model", folder, "--spec", spec, "--out", out)
    assert rc == 0 and "left_eye" in stdout
    assert_png(out / "correspondence.png")
    numbers = json.loads((out / "correspondence.json").read_text())
    assert set(numbers["delta"]) == {"left_eye", "nose", "random"}
    assert set(numbers["delta"]["nose"]) == {"conv3", "fc7"}
    assert all(0 <= v["mean"] <= 1 for row in numbers["delta"].values() for v in row.values())
    assert numbers["boxes"]["left_eye"][0] == [1, 1, 5, 5]  # 64 px image boxes mapped to the 32 px input
    assert numbers["random_box_hw"] == [4, 4]  # the median part box (torch's lower median)
    assert len(numbers["boxes"]["random"]) == 2


def test_command_box_outside_image_is_one_line(tmp_path, capsys):
    folder, spec = write_spec(tmp_path, box=(2, 2, 10, 90))
    rc, _, err = run_cli(capsys, "correspondence", "--model", folder, "--spec", spec, "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and "outside" in err
