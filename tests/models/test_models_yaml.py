"""model.yaml validation: every mistake is one DvisError line that says how to fix it."""
import pytest

from dvis.errors import DvisError, LayerNotFoundError
from dvis.models.loading import load_model
from dvis.models.spec import parse_model_yaml
from helpers.models import make_model_folder

pytestmark = pytest.mark.filterwarnings("ignore:model .* random init:UserWarning")

GOOD = """
    architecture: tinynet.py:build
    input_size: [20, 30]
    weights: none
"""


def _error(tmp_path, yaml_text, exc=DvisError) -> str:
    folder = make_model_folder(tmp_path, yaml_text)
    with pytest.raises(exc) as info:
        load_model(folder)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_minimal_yaml_defaults(tmp_path):
    spec = parse_model_yaml(make_model_folder(tmp_path, GOOD) / "model.yaml")
    assert spec.name == "tiny" and spec.input_size == (20, 30) and spec.channels == 3
    assert spec.unit_vis == "unit_vis" and spec.checkpoints == [] and spec.layers is None


def test_sequential_index_names_may_be_ints(tmp_path):
    m = load_model(make_model_folder(tmp_path, GOOD + "    layers: [0, {name: 4, display: 'fc'}]\n"))
    assert m.layers == ["0", "4"] and m.display_names == {"0": "0", "4": "fc"}


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    msg = _error(tmp_path, GOOD + "    wieghts: w.pt\n    layer: [a]\n")
    assert "'wieghts' (did you mean 'weights'?)" in msg
    assert "'layer' (did you mean 'layers'?)" in msg


def test_unknown_layer_entry_key(tmp_path):
    msg = _error(tmp_path, GOOD + "    layers:\n      - {name: '0', dispaly: conv1}\n")
    assert "'dispaly'" in msg and "'display'" in msg


def test_layer_not_in_net_lists_valid_names(tmp_path):
    msg = _error(tmp_path, GOOD + "    layers: ['0', conv9]\n", LayerNotFoundError)
    assert "conv9" in msg and "model.yaml" in msg
    for valid in ("0", "1", "2", "4"):
        assert valid in msg


@pytest.mark.parametrize("extra, words", [
    ("    channels: 2\n", "channels must be 3 or 1"),
    ("    mean: [0.5, 0.5]\n", "mean must be a number or a list of 3"),
    ("    std: [1, 0, 1]\n", "std must be positive"),
    ("    mean: [123.7, 116.8, 103.9]\n", "divide 0..255 values by 255"),
    ("    layers: []\n", "layers must be a non-empty list"),
    ("    layers: ['0', '0']\n", "listed twice"),
    ("    layers: [{display: x}]\n", "bad layer entry"),
    ("    checkpoints: a.pt\n", "checkpoints must be a list"),
    ("    args: [1]\n", "args must be a mapping"),
])
def test_bad_values(tmp_path, extra, words):
    assert words in _error(tmp_path, GOOD + extra)


@pytest.mark.parametrize("text, words", [
    ("architecture: tinynet.py:build\ninput_size: [0, 3]\n", "input_size must be"),
    ("input_size: 8\n", "architecture is required"),
    ("architecture: [unclosed\n", "invalid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("architecture: alexnett\n", "did you mean alexnet"),
    ("architecture: tinynet.py:nothere\ninput_size: 8\n", "no callable 'nothere'"),
    ("architecture: missing.py:build\ninput_size: 8\n", "no file"),
    ("architecture: no_such_module_xyz:build\ninput_size: 8\n", "cannot import no_such_module_xyz"),
    ("architecture: tinynet.py:build\n", "input_size is required"),
    ("architecture: tinynet.py:build\ninput_size: 8\nweights: absent.pt\n", "absent.pt not found"),
    ("architecture: tinynet.py:build\ninput_size: 8\nlabels: nolabels.txt\n", "nolabels.txt not found"),
    ("architecture: alexnet\nweights: AlexNet_Weights.IMAGENET9K\n", "unknown torchvision weights"),
    ("architecture: alexnet\nweights: ResNet18_Weights.IMAGENET1K_V1\n", "do not belong to architecture 'alexnet'"),
    ("architecture: tinynet.py:build\ninput_size: 8\nargs: {num_clases: 2}\n", "num_clases"),
])
def test_bad_files(tmp_path, text, words):
    assert words in _error(tmp_path, text)


def test_user_code_errors_become_one_line(tmp_path):
    folder = make_model_folder(tmp_path, GOOD, net_code="raise ImportError('needs foo\\nsecond line')\n")
    with pytest.raises(DvisError, match="cannot import tinynet.py.*ImportError: needs foo") as info:
        load_model(folder)
    assert "\n" not in str(info.value)
    folder = make_model_folder(tmp_path, GOOD, name="notnet", net_code="def build():\n    return 42\n")
    with pytest.raises(DvisError, match="returned int, not a torch.nn.Module"):
        load_model(folder)


def test_folder_without_model_yaml(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DvisError, match="has no model.yaml"):
        load_model(tmp_path / "empty")
