"""``dvis info``: header and layer table for alexnet (random init) and the custom example."""
import re

import pytest

from dvis.cli import main
from helpers.models import EXAMPLE

pytestmark = pytest.mark.filterwarnings("ignore:model .* random init:UserWarning")


def _row(out: str, layer: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(layer + " "))
    return line.split()


def test_info_alexnet_random_init(capsys):
    assert main(["info", "alexnet", "--weights", "none"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^model +alexnet +\(.*models/alexnet\)$", out, re.M)
    assert re.search(r"^input +224x224x3 ", out, re.M)
    assert re.search(r"^weights +none \(random init\)$", out, re.M)
    assert re.search(r"^labels +1000$", out, re.M)
    assert re.search(r"^device +cpu$", out, re.M)
    assert _row(out, "layer") == ["layer", "display", "output", "rf", "size", "rf", "stride", "units", "layout"]
    assert _row(out, "features.0") == ["features.0", "conv1", "64x55x55", "11", "4", "64", "chw"]
    assert _row(out, "features.2")[:3] == ["features.2", "pool1", "64x27x27"]
    assert _row(out, "features.12") == ["features.12", "pool5", "256x6x6", "195", "32", "256", "chw"]
    fc6 = _row(out, "classifier.1")
    assert fc6[:3] == ["classifier.1", "fc6", "4096"] and fc6[-2:] == ["4096", "vector*"]
    assert _row(out, "classifier.6")[:3] == ["classifier.6", "fc8", "1000"]
    assert re.search(r"^activations +ReLU x7$", out, re.M)
    table = out.split("\n\n")[1].splitlines()
    assert len(table) == 1 + 11
    assert len({line.index("display") if i == 0 else None for i, line in enumerate(table)} - {None}) == 1


def test_info_custom_example(capsys):
    assert main(["info", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^model +custom-tinynet ", out, re.M)
    assert re.search(r"^input +48x64x1 ", out, re.M)
    assert re.search(r"^labels +4$", out, re.M)
    assert _row(out, "conv1") == ["conv1", "conv1", "8x48x64", "5", "1", "8", "chw"]
    assert _row(out, "pool2")[:3] == ["pool2", "p2", "16x12x16"]
    assert _row(out, "fc3")[:3] == ["fc3", "fc3", "4"]


def test_info_errors_are_one_line(capsys):
    assert main(["info", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dvis info: error: unknown model 'no-such-model'") and "\n" not in err
    assert main(["info", str(EXAMPLE), "--device", "nonsense"]) == 2
    assert "unknown device 'nonsense'" in capsys.readouterr().err
