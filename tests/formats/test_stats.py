"""The unit statistics format (dvis.formats.stats): derived statistics, the correlation subsample,
and a run's statistics written and read back without pickle."""
from __future__ import annotations

import numpy as np
import pytest

from dvis.formats.maxes import load_result, save_result
from dvis.formats.stats import UnitStats, corr_units, derive, selectivity_index, stats_complete
from dvis.imaging.labels import source_labels
from dvis.pipeline.maxes import TrackConfig, track_maxes

pytestmark = pytest.mark.filterwarnings("ignore:skipping unreadable")


def cfg(**kw):
    base = dict(top=4, batch_size=5, workers=0, progress=False, bottom_k=3)
    base.update(kw)
    return TrackConfig(**base)


def test_selectivity_index_and_subsample():
    cm = np.array([[4.0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [3, 1, 1, 1]])
    si = selectivity_index(cm)
    assert si[0] == 1 and si[1] == 0 and np.isnan(si[2]) and si[3] == pytest.approx(0.5)
    cu = corr_units(3000)
    assert len(cu) == 1024 and cu[0] == 0 and cu[-1] == 2999 and np.array_equal(cu, corr_units(3000))
    assert np.array_equal(corr_units(1024), np.arange(1024))


def test_format_round_trip_without_pickle(tiny_blob, tmp_path):
    _, _, model, source = tiny_blob
    result = track_maxes(model, source, config=cfg(), labels=source_labels(source))
    save_result(result, tmp_path, {"model": "tiny", "fingerprint": "fp1"}, source.names)
    assert stats_complete(tmp_path, "fp1") and not stats_complete(tmp_path, "other")
    back = UnitStats(tmp_path)
    assert back.classes == ["a", "b"] and back.layers == result.layers
    s = back.layer("conv2")
    ref = derive(result.stats.arrays, "conv2", result.shapes["conv2"], True)
    np.testing.assert_array_equal(s.hist, ref.hist)
    assert s.topk_classes.sum(1).tolist() == [4, 4, 4]
    assert s.top_classes(0)[0][1] > 0
    assert len(s.most_correlated(0, 8)) <= 2
    with np.load(tmp_path / "stats.npz", allow_pickle=False) as z:
        assert z["conv1:hist"].dtype == np.int64 and z["@labels"].tolist() == back.labels.tolist()
    r2, _, _ = load_result(tmp_path)
    assert r2.layers == result.layers
