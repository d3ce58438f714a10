"""Unit statistics in the toolbox, through the headless driver: the unit pane's lines, the
histogram and correlation modes, the jump to the most correlated unit, help, and the messages
without statistics; plus the pure renderers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dvis.imaging.datasets import open_source
from dvis.pipeline.maxes import TrackConfig, track_maxes
from dvis.formats.maxes import save_result
from dvis.models.loading import load_model
from dvis.toolbox import stats_panes as SP
from dvis.toolbox.drivers import run_keys
from dvis.toolbox.render import Style
from dvis.formats.stats import N_BINS, UnitStats, derive
from dvis.imaging.labels import source_labels
from dvis.pipeline.stats import StatsState

import helpers.pipeline as pipeline_helpers  # noqa: E402
from helpers.toolbox import make_images, make_model_folder, make_toolbox  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:skipping unreadable")


def toolbox_with_stats(tmp_path):
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.settings import load_settings

    folder = make_model_folder(tmp_path)
    model = load_model(str(folder))
    pipeline_helpers.make_images(tmp_path / "labelled", n=24)  # 16x16 images in class folders a/ and b/
    source = open_source(tmp_path / "labelled")
    result = track_maxes(model, source, config=TrackConfig(top=4, batch_size=8, workers=0, progress=False),
                         labels=source_labels(source))
    save_result(result, folder / "unit_vis" / "maxes", {"model": str(folder), "fingerprint": "fp"}, source.names)
    values = {"images": str(make_images(tmp_path)), "pause_after_key_s": 0.0, "global_scale": 0.6,
              "screenshot_dir": str(tmp_path / "shots")}
    return Toolbox(load_model(str(folder)), load_settings(None, values), headless=True)


def pane(tb, name):
    t, l, h, w = tb.panes[name]
    return tb.canvas[t:t + h, l:l + w].copy()


def has_color(img, color) -> bool:
    return bool((img.reshape(-1, 3) == np.array(color, np.uint8)).all(1).any())


def test_modes_keys_and_unit_lines_with_statistics(tmp_path):
    tb = toolbox_with_stats(tmp_path)
    try:
        assert tb.unit_stats is not None and tb.unit_stats.classes == ["a", "b"]
        run_keys(tb, [])
        ls = tb.unit_stats.layer("conv1")
        lines = SP.unit_lines(ls, 0, tb.unit_stats.classes)
        assert any(line.startswith("selectivity") for line in lines) and any(line.startswith("top: ") for line in lines)
        acts_pane = pane(tb, "layers")
        run_keys(tb, ["1"])
        assert tb.state.stats_view == "hist" and "| hist |" in tb.status_text()
        hist = pane(tb, "layers")
        assert has_color(hist, tb.style.positive) and not np.array_equal(hist, acts_pane)
        if ls.dead.any():
            assert has_color(hist, SP.DEAD)
        run_keys(tb, ["r"])  # correlation mode: the selected tile white, others by r
        assert tb.state.stats_view == "corr"
        corr = pane(tb, "layers")
        assert has_color(corr, (255, 255, 255)) and not np.array_equal(corr, hist)
        best = tb.geo.most_correlated[0][0]
        expected = ls.most_correlated(0, 1)
        assert best == (expected[0][0] if expected else -1)
        run_keys(tb, ["R"])
        assert tb.state.unit == (best if best >= 0 else 0)
        run_keys(tb, ["2"])  # the unshifted alternate jumps on from there
        assert tb.state.unit == (tb.geo.most_correlated[0][best] if best >= 0 else 0)
        run_keys(tb, ["r"])
        assert tb.state.stats_view == "off"
        run_keys(tb, ["h"])
        helps = " ".join(" ".join(row) for row in tb.help_rows)
        assert "histogram mode" in helps and "correlation mode" in helps and "most correlated" in helps
    finally:
        tb.close()


def test_without_statistics_the_panes_say_which_command_computes_them(tmp_path):
    tb = make_toolbox(tmp_path)
    try:
        assert tb.unit_stats is None and "dvis maxes" in tb.stats_message
        run_keys(tb, ["1"])
        layers = pane(tb, "layers")
        assert (layers == np.array(tb.style.disabled, np.uint8)).all(2).mean() > 0.8  # the message pane
        run_keys(tb, ["R"])  # no statistics: the jump key changes nothing and raises nothing
        assert tb.state.unit == 0 and "failed" not in tb.message
        assert SP.unit_lines(None, 0, []) == SP.MISSING and "dvis maxes" in " ".join(SP.MISSING)
    finally:
        tb.close()


def test_pure_renderers():
    style = Style()
    n = 3
    # Unit 0: scores 1, 2, 2; unit 1: never positive (dead); unit 2: 0, 0, 5.
    scores = np.array([[1.0, -1, 0], [2, -2, 0], [2, -1, 5]])
    st = StatsState({"l": (n,)}, 0)
    st.update("l", torch.tensor(scores, dtype=torch.float32), torch.ones(3, dtype=torch.bool))
    arrays = st.to_arrays()
    ls = derive(arrays, "l", (n,), False)
    assert ls.dead.tolist() == [False, True, False] and ls.hist.shape == (3, N_BINS)
    tiles = SP.hist_tiles(ls, style)
    assert tiles.shape == (3, SP.TILE, SP.TILE, 3)
    assert has_color(tiles[1], SP.DEAD) and not has_color(tiles[0], SP.DEAD)
    assert has_color(tiles[0], style.positive)
    corr = SP.corr_tiles(ls.corr_with(0), 0, n, style)
    assert (corr[0] == 255).all()  # the selected unit
    c02 = np.corrcoef(scores[:, 0], scores[:, 2])[0, 1]
    assert ls.corr_with(0)[2] == pytest.approx(c02)
    table = SP.correlated_table(UnitStatsLike(ls), ["l"])
    r = np.corrcoef(scores.T)
    np.fill_diagonal(r, -np.inf)
    assert table == (tuple(int(j) for j in r.argmax(1)),)


class UnitStatsLike:
    """The part of UnitStats that correlated_table reads, over one derived layer."""

    def __init__(self, ls):
        self.shapes, self._ls = {"l": (len(ls.mean),)}, ls

    def layer(self, layer):
        return self._ls


def test_shipped_zf_cifar10_statistics_are_complete():
    model = load_model(None)
    stats = UnitStats(Path(model.unit_vis_dir) / "maxes")
    assert stats.layers == model.layers and stats.classes == model.labels and stats.meta["n_images"] == 10000
    for layer in stats.layers:
        s = stats.layer(layer)
        assert s.n == 10000 and s.hist.sum(1).tolist() == [10000] * len(s.mean)
        assert s.topk_classes.sum(1).tolist() == [9] * len(s.mean)
    fc8 = stats.layer("fc8")
    # The logit of class c is the highest for its own class's images: top classes follow the labels.
    assert [s[0][0] for s in (fc8.top_classes(u, 1) for u in range(10))] == list(range(10))
