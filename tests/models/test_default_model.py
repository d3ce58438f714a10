"""The embedded default model ships complete: weights that classify, and every unit's images."""
import json
import math
from pathlib import Path

import torch

from dvis.imaging.images import list_images, read_image
from dvis.pipeline.maxes import layer_shapes
from dvis.models.loading import load_model
from dvis.formats.unit_vis import coverage

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "zf-cifar10"


def test_default_model_is_zf_cifar10_plain_net() -> None:
    model = load_model()
    assert model.name == "zf-cifar10"
    kinds = {type(m) for m in model.net.modules()}
    assert torch.nn.BatchNorm2d not in kinds  # folded before shipping: deconv projections stay exact
    assert model.layers[:2] == ["conv1", "pool1"] and model.layers[-1] == "fc8"
    assert len(model.checkpoints) >= 5 and all(p.is_file() for p in model.checkpoints)


def test_shipped_weights_classify_sample_images_at_recorded_accuracy() -> None:
    model = load_model("zf-cifar10")
    recorded = json.loads((MODEL_DIR / "metrics.json").read_text())["top1"]
    files = list_images(ROOT / "input_images", pattern=r"^cifar_")
    assert len(files) >= 40
    truth = torch.tensor([model.labels.index(Path(f).name.split("_")[1]) for f in files])
    x = torch.cat([model.preprocess(read_image(f)) for f in files])
    with torch.inference_mode():
        pred = model.net(x).argmax(1)
    acc = (pred == truth).float().mean().item()
    sigma = math.sqrt(recorded * (1 - recorded) / len(files))
    assert acc >= recorded - 3 * sigma, f"sample accuracy {acc:.3f} vs recorded {recorded:.3f}"


def test_unit_images_complete_for_every_listed_layer() -> None:
    model = load_model("zf-cifar10")
    shapes = layer_shapes(model.net, model.layers, (model.channels,) + tuple(model.input_size), model.device)
    missing = coverage(model.unit_vis_dir, {n: shapes[n][0] for n in model.layers}, ("top9", "deconv", "opt"))
    gaps = {layer: {k: v for k, v in kinds.items() if v} for layer, kinds in missing.items()}
    assert not any(gaps.values()), f"units without images: {gaps}"
