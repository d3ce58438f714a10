"""What precompute says while it runs: the plan and its costs up front, display names in its
progress, and an optimize bar that moves step by step within a batch."""
import pytest

from dvis.models.loading import load_model
from dvis.pipeline.maxes import TrackConfig
from dvis.pipeline.optimize import OptSettings, optimize_units, step_credit
from dvis.pipeline.precompute import plan, precompute
from helpers.toolbox import make_images, make_model_folder


@pytest.fixture
def tiny(tmp_path):
    return load_model(str(make_model_folder(tmp_path, unit_images=False))), make_images(tmp_path)


def test_precompute_says_what_each_step_costs_before_it_starts_and_names_layers_as_the_toolbox(
        tiny, tmp_path, capsys):
    model, images = tiny
    out = tmp_path / "unit_vis"
    precompute(model, images, out, layers=["conv1", "pool2"], track=TrackConfig(batch_size=4, workers=0),
               settings=OptSettings(iters=3, seeds=2))
    stdout, stderr = capsys.readouterr()
    lines = stdout.splitlines()
    assert lines[0] == f"precompute tiny: 2 layer(s), 16 units -> {out}"
    assert lines[1].split() == "maxes 7 images x 2 layers: one forward pass per 4-image batch, top 9 per unit".split()
    assert lines[2].startswith("  crops     7 images x 2 layers: up to 9 patches per unit, 112 back-projections")
    assert lines[3].startswith("  optimize  16 units x 2 seeds x 3 steps in 2 layer(s): ")
    assert lines[3].endswith("(one step timed per layer), the same however few images are given")
    assert lines[4].startswith("maxes: ")  # the plan comes before any step runs
    # pool2 is shown as `p2` (its display name in model.yaml) in the bars and the summaries
    assert "crops p2" in stderr and "optimize p2" in stderr and "pool2" not in stderr
    assert any(line.startswith("optimize p2: 10 units") for line in lines) and "pool2" not in stdout

    precompute(model, images, out, layers=["conv1", "pool2"], track=TrackConfig(batch_size=4, workers=0),
               settings=OptSettings(iters=3, seeds=2), skip=("maxes", "crops"))
    assert capsys.readouterr().out.splitlines()[1] == "  optimize  already complete"


def test_plan_of_optimize_alone(tiny, tmp_path):
    model, _ = tiny
    lines = list(plan(model, 1000, tmp_path, ["fc3"], TrackConfig(), OptSettings(iters=500),
                      skip=("maxes", "crops")))
    assert len(lines) == 2 and lines[1].startswith("  optimize  5 units x 2 seeds x 500 steps in 1 layer(s): ")


def test_the_optimize_progress_moves_with_every_step_within_a_batch(tiny):
    model, _ = tiny
    calls = []
    optimize_units(model, "conv1", [0, 1, 2], OptSettings(iters=12, seeds=2, batch_size=256), progress=calls.append)
    assert sum(calls) == 6 and len(calls) == 6  # one batch of 6 images, credited as its steps go


def test_step_credit_gives_whole_images_in_proportion_to_the_steps_done():
    got = []
    on_step = step_credit(got.append, 256, 50)
    for step in range(1, 51):
        on_step(step)
        assert sum(got) == 256 * step // 50
    assert len(got) == 50 and sum(got) == 256
