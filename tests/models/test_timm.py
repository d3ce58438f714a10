"""timm models through model.yaml and --model timm:NAME, at random init and from a state_dict file."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import timm
from timm.data import resolve_data_config

from dvis.errors import DvisError
from dvis.models.loading import load_model

# One small model of each family the issue names.
FAMILIES = ["resnet18", "efficientnet_b0", "convnext_atto", "regnetx_002"]


def _folder(tmp_path, yaml_text: str):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.yaml").write_text(yaml_text)
    return folder


@pytest.mark.parametrize("name", FAMILIES)
def test_model_yaml_random_init(tmp_path, name):
    folder = _folder(tmp_path, f"architecture: timm:{name}\nweights: none\n")
    with pytest.warns(UserWarning, match="random init"):
        model = load_model(str(folder))
    cfg = resolve_data_config({}, model=timm.create_model(name))
    assert model.input_size == tuple(cfg["input_size"][1:])
    assert model.mean == pytest.approx(cfg["mean"]) and model.std == pytest.approx(cfg["std"])
    assert model.weights_source == "none (random init)"
    assert len(model.labels) == 1000 and model.labels[0] == "tench"
    assert model.layers and not model.net.training
    x = model.preprocess(torch.zeros(50, 70, 3, dtype=torch.uint8).numpy())
    assert x.shape == (1, 3) + model.input_size
    with torch.no_grad():
        assert model.net(x).shape == (1, 1000)


def test_command_line_name_and_args(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("timm:resnet18", weights="none")
    assert model.name == "timm:resnet18" and model.folder is None and model.input_size == (224, 224)
    # args go to timm.create_model; a 10-class head has no ImageNet names; channels sets in_chans
    folder = _folder(tmp_path, "architecture: timm:resnet18\nargs: {num_classes: 10}\nchannels: 1\n"
                               "input_size: 64\nlabels: [a, b, c, d, e, f, g, h, i, j]\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = load_model(str(folder))
    assert small.input_size == (64, 64) and small.channels == 1 and len(small.mean) == 1
    assert small.net.conv1.in_channels == 1 and small.labels[-1] == "j"
    with torch.no_grad():
        assert small.net(torch.zeros(1, 1, 64, 64)).shape == (1, 10)
    (folder / "model.yaml").write_text("architecture: timm:resnet18\nargs: {num_classes: 10}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_model(str(folder)).labels == []


def test_state_dict_file_in_folder(tmp_path):
    torch.manual_seed(3)
    reference = timm.create_model("regnetx_002").eval()
    folder = _folder(tmp_path, "architecture: timm:regnetx_002\nweights: weights.pt\n")
    torch.save({"state_dict": reference.state_dict()}, folder / "weights.pt")
    model = load_model(str(folder))
    assert model.weights_source == str(folder / "weights.pt")
    x = torch.randn(1, 3, *model.input_size)
    with torch.no_grad():
        assert torch.equal(model.net(x), reference(x))
    # a file that does not fit names the file; a missing one says so
    torch.save(timm.create_model("resnet18").state_dict(), folder / "weights.pt")
    with pytest.raises(DvisError, match="weights.pt: weights do not fit"):
        load_model(str(folder))
    (folder / "weights.pt").unlink()
    with pytest.raises(DvisError, match="weights file .* not found"):
        load_model(str(folder))


def test_unknown_name_suggests(tmp_path):
    with pytest.raises(DvisError, match=r"unknown timm model 'resnet181'.*timm:resnet18"):
        load_model("timm:resnet181", weights="none")
    with pytest.raises(DvisError, match="failed to build"):
        load_model(str(_folder(tmp_path, "architecture: timm:resnet18\nargs: {no_such_arg: 1}\n")), weights="none")


def test_pretrained_offline_is_one_line(tmp_path, monkeypatch):
    # CI has no network: force the hub offline and point its cache at an empty folder.
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(DvisError) as err:
        load_model("timm:resnet18", weights="pretrained")
    message = str(err.value)
    assert "\n" not in message and "pretrained weights are not available" in message and "weights: none" in message


def test_missing_timm_says_how_to_install(monkeypatch):
    for mod in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(DvisError, match=r"needs the timm package: pip install dvis\[timm\]"):
        load_model("timm:resnet18", weights="none")


def test_missing_timm_on_the_command_line(tmp_path):
    # A fresh interpreter where timm cannot be imported: the CLI prints one line, exit status 2.
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['timm'] = None\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}"}
    proc = subprocess.run([sys.executable, "-m", "dvis", "info", "timm:resnet18", "--weights", "none"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "timm" in line]
    assert lines and "pip install dvis[timm]" in lines[-1] and "Traceback" not in proc.stderr
