"""load_model: shipped folders, torchvision weights from the hub cache (offline), weight files,
checkpoints, lookup of model folders, bare torchvision names, the custom example and devices."""
import os
import shutil

import pytest
import torch
import torchvision.models as tvm

from dvis.errors import DvisError
from dvis.models.loading import LoadedModel, load_model
from helpers.models import EXAMPLE, REPO, TINY_NET, block_network, make_model_folder

pytestmark = [
    pytest.mark.filterwarnings("ignore:model .* random init:UserWarning"),
    pytest.mark.filterwarnings("ignore:model .* missing checkpoint:UserWarning"),  # zf-cifar10 may be mid-training
]

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # basename of AlexNet_Weights.IMAGENET1K_V1.url


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME with the network unavailable."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_alexnet_folder_loads_offline_from_the_torch_cache(torch_home, monkeypatch):
    assert os.path.basename(tvm.AlexNet_Weights.IMAGENET1K_V1.url) == ALEXNET_FILE
    cached = torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = tvm.alexnet().state_dict()
    torch.save(state, cached)
    tried = block_network(monkeypatch)
    m = load_model("alexnet")
    assert tried == []
    assert isinstance(m, LoadedModel) and m.name == "alexnet" and m.folder == REPO / "models" / "alexnet"
    assert "AlexNet_Weights.IMAGENET1K_V1" in m.weights_source and str(cached) in m.weights_source
    torch.testing.assert_close(m.net.features[0].weight, state["features.0.weight"])
    assert not m.net.training and m.device == torch.device("cpu")
    assert m.layers[0] == "features.0" and m.display_names["features.0"] == "conv1"
    assert [m.display_names[x] for x in m.layers] == [
        "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
    assert len(m.labels) == 1000 and m.labels[0] == "tench" and m.labels[-1] == "toilet tissue"
    assert m.input_size == (224, 224) and m.channels == 3
    assert m.unit_vis_dir == m.folder / "unit_vis" and m.checkpoints == []
    with torch.no_grad():
        assert m.net(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("name, file", [
    ("alexnet", ALEXNET_FILE), ("vgg16", "vgg16-397923af.pth"), ("resnet18", "resnet18-f37072fd.pth"),
])
def test_missing_weights_offline_fail_with_one_line(torch_home, monkeypatch, name, file):
    tried = block_network(monkeypatch)
    with pytest.raises(DvisError) as info:
        load_model(name)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(torch_home / "hub" / "checkpoints" / file) in msg
    assert "internet" in msg and "put the file there" in msg
    assert len(tried) == 1 and tried[0].endswith(file)
    assert not (torch_home / "hub" / "checkpoints" / file).exists()  # no partial download left behind


def test_corrupt_cached_weights_name_the_file(torch_home, monkeypatch):
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a torch file")
    block_network(monkeypatch)
    with pytest.raises(DvisError, match="resnet18-f37072fd.pth: cannot load weights .*delete the file") as info:
        load_model("resnet18")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, n_layers, first, last", [
    ("vgg16", 21, ("features.0", "conv1_1"), ("classifier.6", "fc8")),
    ("resnet18", 12, ("conv1", "conv1"), ("fc", "fc1000")),
])
def test_shipped_folders_build_with_random_init(name, n_layers, first, last):
    with pytest.warns(UserWarning, match="random init"):
        m = load_model(name, weights="none")
    assert m.weights_source == "none (random init)"
    assert len(m.layers) == n_layers and len(m.labels) == 1000 and m.input_size == (224, 224)
    assert (m.layers[0], m.display_names[m.layers[0]]) == first
    assert (m.layers[-1], m.display_names[m.layers[-1]]) == last
    assert len(set(m.display_names.values())) == n_layers


def test_bare_torchvision_name_uses_imagenet_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./models here
    with pytest.warns(UserWarning, match="squeezenet1_1: no weights"):
        m = load_model("squeezenet1_1")
    assert m.folder is None and m.unit_vis_dir is None and m.checkpoints == []
    assert m.input_size == (224, 224) and m.mean == (0.485, 0.456, 0.406) and m.std == (0.229, 0.224, 0.225)
    assert len(m.labels) == 1000 and m.layers and all(isinstance(x, str) for x in m.layers)
    assert m.display_names == {x: x for x in m.layers}


def test_input_size_is_the_one_the_net_is_built_for(tmp_path):
    # vit_h_14's default weights say 518 px, its random-init net is built for 224: the net's image_size wins
    folder = make_model_folder(tmp_path, "architecture: vit_b_16\nweights: none\nargs: {image_size: 64}\n"
                                         "layers: [encoder.layers.encoder_layer_0]\n")
    with pytest.warns(UserWarning, match="weights none, the net has random init"):
        m = load_model(str(folder))
    assert m.net.image_size == 64 and m.input_size == (64, 64)
    assert m.net(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


def test_default_model_is_zf_cifar10():
    m = load_model(None, weights="none")
    assert m.name == "zf-cifar10" and m.folder == REPO / "models" / "zf-cifar10"
    assert m.input_size == (32, 32) and len(m.labels) == 10 and m.layers[0] == "conv1"


def test_custom_model_example():
    with pytest.warns(UserWarning, match="random init"):
        m = load_model(str(EXAMPLE))
    assert m.name == "custom-tinynet" and m.channels == 1 and m.input_size == (48, 64)
    assert m.layers == ["conv1", "pool1", "conv2", "pool2", "fc3"]
    assert m.display_names["pool1"] == "p1" and m.display_names["conv1"] == "conv1"
    assert m.labels == ["circle", "square", "triangle", "star"] and m.mean == (0.5,) and m.std == (0.25,)
    with torch.no_grad():
        assert m.net(torch.zeros(1, 1, 48, 64)).shape == (1, 4)
    assert load_model(EXAMPLE / "model.yaml").name == "custom-tinynet"  # the yaml path works too


def _tiny(num_classes: int, seed: int) -> torch.nn.Module:
    scope: dict = {}
    exec(TINY_NET, scope)
    torch.manual_seed(seed)
    return scope["build"](num_classes)


def test_weights_file_checkpoints_and_load_weights(tmp_path, monkeypatch):
    folder = make_model_folder(tmp_path, """
        architecture: tinynet.py:build
        args: {num_classes: 5}
        weights: weights.pt
        input_size: 16
        labels: [a, b, c, d, e]
        checkpoints: [ckpt/1.pt, ckpt/2.pt]
    """)
    trained, epoch1 = _tiny(5, seed=1).state_dict(), _tiny(5, seed=2).state_dict()
    torch.save(trained, folder / "weights.pt")
    (folder / "ckpt").mkdir()
    # checkpoints saved from DataParallel, inside a training dict, load too
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in epoch1.items()}}, folder / "ckpt" / "1.pt")
    with pytest.warns(UserWarning, match="1 missing checkpoint.*2.pt"):
        m = load_model(folder)
    assert str(folder) not in os.sys.path  # the folder was on sys.path only while importing
    assert m.weights_source == str(folder / "weights.pt") and m.input_size == (16, 16)
    assert m.labels == ["a", "b", "c", "d", "e"] and m.checkpoints == [folder / "ckpt" / "1.pt"]
    assert not any(p.requires_grad for p in m.net.parameters())
    torch.testing.assert_close(m.net[0].weight, trained["0.weight"])
    m.load_weights(m.checkpoints[0])
    torch.testing.assert_close(m.net[0].weight, epoch1["0.weight"])
    assert m.weights_source == str(folder / "ckpt" / "1.pt")

    torch.save(_tiny(3, seed=0).state_dict(), tmp_path / "other.pt")
    with pytest.raises(DvisError, match=r"other.pt: weights do not fit the net: shape mismatch in 4.weight"):
        m.load_weights(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DvisError, match="junk.pt: not a readable state_dict file"):
        m.load_weights(tmp_path / "junk.pt")
    # weights= overrides model.yaml's; a relative file is taken from the current directory
    with pytest.warns(UserWarning, match="random init"):
        assert load_model(folder, weights="none").weights_source == "none (random init)"
    monkeypatch.chdir(folder / "ckpt")
    m = load_model(folder, weights="1.pt")
    assert m.weights_source == str(folder / "ckpt" / "1.pt")
    torch.testing.assert_close(m.net[0].weight, epoch1["0.weight"])


def test_model_folders_are_found_by_name(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    shutil.copytree(EXAMPLE, first / "mine")
    shutil.copytree(EXAMPLE, second / "theirs")
    monkeypatch.setenv("DVIS_MODELS", os.pathsep.join([str(first), str(second)]))
    with pytest.warns(UserWarning):
        assert load_model("theirs").folder == (second / "theirs").resolve()
    monkeypatch.chdir(tmp_path)
    shutil.copytree(EXAMPLE, tmp_path / "models" / "local")
    with pytest.warns(UserWarning):
        assert load_model("local").folder == (tmp_path / "models" / "local").resolve()
    with pytest.raises(DvisError, match="unknown model 'locl' .did you mean local"):
        load_model("locl")
    with pytest.raises(DvisError, match="no/such/folder: no such model folder"):
        load_model("no/such/folder")
    with pytest.raises(DvisError, match="not a model folder or model.yaml"):
        load_model(EXAMPLE / "tinynet.py")


def test_devices():
    with pytest.raises(DvisError, match="unknown device 'gpu0'"):
        load_model(EXAMPLE, device="gpu0")
    if torch.cuda.is_available():
        with pytest.warns(UserWarning):
            m = load_model(EXAMPLE, device="cuda")
        assert next(m.net.parameters()).is_cuda and m.preprocess(torch.zeros(5, 5, dtype=torch.uint8).numpy()).is_cuda
    else:
        with pytest.raises(DvisError, match="'cuda' requested but CUDA is not available"):
            load_model(EXAMPLE, device="cuda")
