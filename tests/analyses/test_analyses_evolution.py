"""dvis.analyses.evolution and ``dvis evolution``."""
import json

import pytest
import torch

from helpers.analyses import assert_png, run_cli, tiny_model_folder, write_images
from dvis.engine.activations import activations
from dvis.analyses.evolution import CELL, feature_evolution, response_correlation, unit_maxima
from dvis.commands.evolution import parse_units
from dvis.errors import DvisError
from dvis.models.loading import load_model


def probe(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_response_correlation():
    a = torch.tensor([[1.0, 2.0, 5.0], [2.0, 2.0, 5.0], [3.0, 2.0, 5.0]])
    b = torch.tensor([[2.0, 1.0, 0.0], [4.0, 2.0, 1.0], [6.0, 3.0, 2.0]])
    c = response_correlation(a, b)
    assert c[0] == pytest.approx(1.0) and c[1] == 0 and c[2] == 0  # constant units count as 0


def test_unit_maxima_match_direct_activations(tmp_path):
    model = load_model(tiny_model_folder(tmp_path, checkpoints=0))
    x = probe()
    maxima = unit_maxima(model, x, ["conv2", "fc6"], batch_size=4)
    acts = activations(model, x, ["conv2", "fc6"])
    vals, where = maxima["conv2"]
    torch.testing.assert_close(vals, acts["conv2"].flatten(2).amax(2))
    torch.testing.assert_close(acts["conv2"].flatten(2).gather(2, where[..., None])[..., 0], vals)
    torch.testing.assert_close(maxima["fc6"][0], acts["fc6"])


def test_feature_evolution_across_checkpoints(tmp_path):
    folder = tiny_model_folder(tmp_path, checkpoints=3)
    model = load_model(folder)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    source = model.weights_source
    ckpts = sorted((folder / "checkpoints").glob("*.pt"))
    units = [("conv1", 0), ("conv3", 5), ("fc6", 2)]
    evo = feature_evolution(model, ckpts, probe(), units, batch_size=4)
    assert model.weights_source == source
    assert evo.checkpoints == ["epoch-001", "epoch-002", "epoch-003"]
    assert evo.values.shape == (3, 3) and evo.images.shape == (3, 3) and evo.positions.shape == (3, 3, 2)
    assert evo.patches.shape == (3, 3, CELL, CELL, 3) and evo.projections.shape == evo.patches.shape
    assert evo.projections.dtype.name == "uint8" and evo.projections.std() > 0
    # Every layer's final checkpoint correlates perfectly with itself.
    assert all(abs(float(v[-1]) - 1) < 1e-5 for v in evo.convergence.values())
    # The top value at the last checkpoint is the unit's maximum over the probe set under those weights.
    model.load_weights(ckpts[-1])
    acts = activations(model, probe(), ["conv3"])["conv3"]
    assert evo.values[-1, 1].item() == pytest.approx(acts[:, 5].max().item(), rel=1e-5)
    n = int(evo.images[-1, 1])
    y, x = evo.positions[-1, 1].tolist()
    assert acts[n, 5, y, x].item() == pytest.approx(acts[:, 5].max().item(), rel=1e-5)
    # The model's own weights come back afterwards.
    model2 = load_model(folder)
    assert all(torch.equal(v, model2.net.state_dict()[k]) for k, v in before.items())
    summary = evo.summary()
    assert summary["units"] == ["conv1:0", "conv3:5", "fc6:2"]


def test_bad_unit_and_no_checkpoints(tmp_path):
    folder = tiny_model_folder(tmp_path, checkpoints=1)
    model = load_model(folder)
    ckpts = sorted((folder / "checkpoints").glob("*.pt"))
    with pytest.raises(DvisError, match="out of range"):
        feature_evolution(model, ckpts, probe(2), [("conv1", 99)])
    with pytest.raises(DvisError, match="no checkpoints"):
        feature_evolution(model, [], probe(2), [("conv1", 0)])


def test_parse_units():
    widths = {"conv1": 4, "conv2": 8}
    assert parse_units(None, ["conv1", "conv2"], widths) == [("conv1", 0), ("conv1", 2), ("conv1", 3),
                                                               ("conv2", 0), ("conv2", 4), ("conv2", 7)]
    assert parse_units(["1", "conv2:5"], ["conv1"], widths) == [("conv1", 1), ("conv2", 5)]
    with pytest.raises(DvisError, match="bad unit"):
        parse_units(["conv1:x"], ["conv1"], widths)


def test_command_writes_grid_and_numbers(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path, checkpoints=2)
    write_images(tmp_path / "imgs", [f"p{i}.png" for i in range(4)])
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(capsys, "evolution", "--model", folder, "--images", tmp_path / "imgs",
                            "--layers", "conv1,conv5", "--units", "0,1", "--out", out)
    assert rc == 0 and "conv5" in stdout
    assert_png(out / "evolution.png")
    numbers = json.loads((out / "evolution.json").read_text())
    assert numbers["units"] == ["conv1:0", "conv1:1", "conv5:0", "conv5:1"]
    assert len(numbers["max_activation"]) == 2 and set(numbers["convergence"]) == {"conv1", "conv5"}
    assert numbers["top_image_path"][0][0].endswith(".png")


def test_command_missing_checkpoint_is_one_line(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path, checkpoints=0)
    write_images(tmp_path / "imgs", ["p.png"])
    rc, _, err = run_cli(capsys, "evolution", "--model", folder, "--images", tmp_path / "imgs",
                         "--checkpoints", tmp_path / "missing.pt", "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and "missing.pt" in err
