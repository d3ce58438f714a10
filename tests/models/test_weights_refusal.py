"""A weights file that is not a plain state_dict (issue 25, item 9): refused with no code run, in
one line naming the file and saying it is refused for safety; torch's advice to load it again
with ``weights_only=False`` (which would run the file's code) is never repeated."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from dvis.errors import DvisError
from dvis.models.weights import load_state_dict_file


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this calls os.system: what a malicious weights file does
        return os.system, (f"touch {self.marker}",)


def _check(message: str, path) -> None:
    assert message.startswith(f"{path}: refused for safety: not a plain state_dict") and "\n" not in message
    assert "weights_only" not in message and "torch.load" not in message and "trusted" not in message


def test_a_pickle_that_runs_code_is_refused_naming_what_it_refers_to(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": _RunsCode(marker)}, path)
    with pytest.raises(DvisError) as info:
        load_state_dict_file(nn.Linear(2, 2), path)
    _check(str(info.value), path)
    assert "it refers to posix.system" in str(info.value) or "it refers to nt.system" in str(info.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_plain_pickle_is_refused_without_the_unsafe_advice(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=4))
    with pytest.raises(DvisError) as info:
        load_state_dict_file(nn.Linear(2, 2), path)
    _check(str(info.value), path)
    assert not marker.exists()


def test_a_broken_file_is_still_unreadable_not_refused(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(DvisError, match="not a readable state_dict file"):
        load_state_dict_file(nn.Linear(2, 2), path)


def test_a_tampered_torchvision_weights_file_in_the_hub_cache_is_refused(tmp_path, monkeypatch):
    """torchvision's own loader asks torch.load for weights_only=False; dvis forces tensors only."""
    import torchvision.models as tvm

    from dvis.models.loading import load_model
    from dvis.models.weights import hub_cache_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "ran"
    cached = hub_cache_file(tvm.get_weight("AlexNet_Weights.IMAGENET1K_V1"))
    cached.parent.mkdir(parents=True)
    torch.save({"features.0.weight": _RunsCode(marker)}, cached)
    with pytest.raises(DvisError) as info:
        load_model("alexnet", weights="AlexNet_Weights.IMAGENET1K_V1")
    message = str(info.value)
    assert str(cached) in message and "refused for safety" in message and "weights_only" not in message
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored after the load
