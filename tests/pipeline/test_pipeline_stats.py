"""Unit statistics of the maxes pass (dvis.pipeline.stats): equal to a brute-force numpy
computation over the same activations; buffered accumulation, shards, resume, maxes-merge and
torchrun give the one-process statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dvis.engine.activations import activations
from dvis.formats.maxes import merge_results
from dvis.formats.stats import EDGES, N_BINS, StatsArrays, UnitStats, bin_edges, derive, topk_class_counts
from dvis.imaging.datasets import fit_image
from dvis.imaging.labels import source_labels
from dvis.pipeline.maxes import TrackConfig, track_maxes
from dvis.pipeline.stats import StatsState

from helpers.pipeline import env_with_models, maxes_three_ways

pytestmark = pytest.mark.filterwarnings("ignore:skipping unreadable")


def cfg(**kw):
    base = dict(top=4, batch_size=5, workers=0, progress=False, bottom_k=3)
    base.update(kw)
    return TrackConfig(**base)


def brute_force(model, source):
    """Per layer: per-image scores (N x U) and maps (or None) of the readable images, with numpy."""
    good, imgs = [], []
    for i in range(len(source)):
        try:
            imgs.append(fit_image(source.load(i), model.input_size, model.channels))
            good.append(i)
        except Exception:
            continue
    x = model.normalize(torch.from_numpy(np.stack(imgs)).float() / 255)
    acts = activations(model, x, model.layers)
    out = {}
    for n, a in acts.items():
        a = a.double().numpy()
        out[n] = (a.reshape(a.shape[0], a.shape[1], -1).max(2), a) if a.ndim == 4 else (a, None)
    return np.array(good), out


def numpy_hist(scores32):
    """Bin counts by the documented rule: the zero bin for 0, else sign x (1 + the number of
    magnitude edges at or below |v|) away from it."""
    center = N_BINS // 2
    hist = np.zeros((scores32.shape[1], N_BINS), np.int64)
    for u in range(scores32.shape[1]):  # the test's brute force may loop; the product may not
        for v in scores32[:, u].astype(np.float64):
            b = center + int(np.sign(v)) * (1 + int(np.searchsorted(EDGES, abs(v), side="right"))) if v else center
            lo, hi = bin_edges()[b]
            assert (lo <= v < hi) if v > 0 else ((lo < v <= hi) if v < 0 else lo == hi == 0)
            hist[u, b] += 1
    return hist


def test_statistics_equal_a_brute_force_numpy_computation(tiny_blob):
    _, _, model, source = tiny_blob
    classes, labels = source_labels(source)
    assert classes == ["a", "b"] and labels.tolist() == [0] * 12 + [1] * 15
    result = track_maxes(model, source, config=cfg(), labels=(classes, labels))
    good, brute = brute_force(model, source)
    lab = labels[good]
    for n in result.layers:
        s = derive(result.stats.arrays, n, result.shapes[n], True)
        scores, maps = brute[n]
        assert s.n == len(good) == 24
        np.testing.assert_allclose(s.mean, scores.mean(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(s.std, scores.std(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.max, scores.max(0), rtol=1e-6)
        np.testing.assert_allclose(s.min, scores.min(0), rtol=1e-6)
        assert np.array_equal(s.frac_images, (scores > 0).mean(0))
        if maps is not None:
            np.testing.assert_allclose(s.frac_positions, (maps > 0).mean((0, 2, 3)))
            np.testing.assert_allclose(s.mean_map, maps.mean((0, 2, 3)), rtol=1e-6, atol=1e-6)
        assert np.array_equal(s.dead, (scores <= 0).all(0))
        assert np.array_equal(s.hist, numpy_hist(scores.astype(np.float32)))
        r = np.maximum(scores, 0)
        class_mean = np.stack([r[lab == c].mean(0) for c in range(2)], 1)
        np.testing.assert_allclose(s.class_mean, class_mean, rtol=1e-6, atol=1e-7)
        best = class_mean.max(1)
        rest = class_mean.min(1)  # two classes: the mean of the others is the other one
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(s.selectivity, (best - rest) / (best + rest), rtol=1e-5)
        with np.errstate(invalid="ignore"):
            corr = np.corrcoef(scores.T)
        np.testing.assert_allclose(s.corr, corr, rtol=1e-5, atol=1e-6)
        top = result.index[n]
        counts = np.stack([np.bincount(labels[top[u][top[u] >= 0]], minlength=2) for u in range(len(top))])
        assert result.stats.arrays[f"{n}:hist"].sum() == 24 * len(top)
        # Bottom-k: the least-activating images, ties by lower index.
        order = np.lexsort((np.broadcast_to(good[:, None], scores.shape), scores.astype(np.float32)), axis=0)[:3].T
        assert np.array_equal(result.stats.arrays[f"{n}:bottom_index"], good[order]), n
        np.testing.assert_allclose(result.stats.arrays[f"{n}:bottom_values"],
                                   np.take_along_axis(scores.T, order, 1), rtol=1e-6)
        assert np.array_equal(topk_class_counts(top, labels, 2), counts)
    # conv1 unit 1 is the negated blob detector: never positive on these images, so dead.
    s = derive(result.stats.arrays, "conv1", result.shapes["conv1"], True)
    assert s.dead.tolist() == [False, True] and np.isnan(s.selectivity[1])
    fc = derive(result.stats.arrays, "fc", result.shapes["fc"], True)
    assert fc.dead[3] and not fc.dead[:3].any()


def stats_equal(a: StatsArrays, b: StatsArrays, exact_sums: bool = False):
    assert a.classes == b.classes and a.bottom_k == b.bottom_k
    assert a.arrays.keys() == b.arrays.keys()
    for k, v in a.arrays.items():
        if v.dtype.kind in "iu" or exact_sums:
            assert np.array_equal(v, b.arrays[k]), k
        else:
            np.testing.assert_allclose(v, b.arrays[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_shards_and_resume_give_the_one_process_statistics(tiny_blob, tmp_path):
    _, _, model, source = tiny_blob
    labels = source_labels(source)
    full = track_maxes(model, source, config=cfg(), labels=labels)
    shards = [track_maxes(model, source, config=cfg(), shard=(i, 3), labels=labels) for i in range(3)]
    stats_equal(merge_results(shards).stats, full.stats)
    no_stats = track_maxes(model, source, config=cfg(stats=False), shard=(1, 3))
    with pytest.warns(UserWarning, match=r"shares \[1\] of 3 have no unit statistics"):
        assert merge_results([shards[0], no_stats, shards[2]]).stats is None

    ckpt = tmp_path / "ckpt.npz"

    def stop_after_2(done):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track_maxes(model, source, config=cfg(checkpoint_every=0), checkpoint=ckpt, on_batch=stop_after_2, labels=labels)
    seen = []
    resumed = track_maxes(model, source, config=cfg(checkpoint_every=0), checkpoint=ckpt, on_batch=seen.append,
                          labels=labels)
    assert seen[0] == 3
    stats_equal(resumed.stats, full.stats, exact_sums=True)
    # A checkpoint of other statistics settings is not resumed from.
    seen.clear()
    track_maxes(model, source, config=cfg(checkpoint_every=0, bottom_k=2), checkpoint=ckpt, on_batch=seen.append)
    assert seen[0] == 1


def test_cli_shards_merge_and_torchrun_gloo_give_the_one_process_statistics(tiny_blob, tmp_path):
    root, model_dir, _, _ = tiny_blob
    env = env_with_models(model_dir.parent)
    common = ["--model", "tiny-blob", "--images", str(root / "images"), "--top", "4", "--batch-size", "4",
              "--workers", "0", "--quiet", "--bottom-k", "2"]
    maxes_three_ways(common, tmp_path, env)
    one = UnitStats(tmp_path / "one")
    assert one.classes == ["a", "b"] and one.meta["bottom_k"] == 2
    for other in ("sharded", "dist"):
        o = UnitStats(tmp_path / other)
        assert o.arrays.keys() == one.arrays.keys()
        for k, v in one.arrays.items():
            if v.dtype.kind in "iu":
                assert np.array_equal(v, o.arrays[k]), (other, k)
            else:
                np.testing.assert_allclose(v, o.arrays[k], rtol=1e-12, atol=1e-12, err_msg=f"{other} {k}")


def test_buffered_accumulation_equals_batch_by_batch_and_checkpoints_its_pending_images():
    """Images kept in the per-layer buffers (batches that fit, batches larger than the buffer,
    skipped images, labels) add up to the batch-by-batch sums; a checkpoint taken with images
    pending and resumed gives the uninterrupted sums bit for bit."""
    g = torch.Generator().manual_seed(5)
    shapes = {"maps": (3, 4, 5), "vec": (6,)}
    batches = []
    for b in (4, 2, 9, 3, 1, 5):
        maps = torch.randn(b, 3, 4, 5, generator=g)
        batches.append((maps, torch.randn(b, 6, generator=g), torch.rand(b, generator=g) > 0.2,
                        torch.randint(-1, 2, (b,), generator=g)))

    def run(state, todo):
        for maps, vec, valid, labels in todo:
            summ = state.map_summaries(maps)
            state.update("maps", summ[0], valid, maps=maps, labels=labels, summaries=summ)
            state.update("vec", vec.clone(), valid, labels=labels)

    direct = StatsState(shapes, 2)
    direct.buffer_rows = 0  # every batch straight into the accumulators
    run(direct, batches)
    buffered = StatsState(shapes, 2)
    buffered.buffer_rows = 6  # the batch of 9 does not fit; the others fill and flush it
    run(buffered, batches)
    a, b = direct.to_arrays(), buffered.to_arrays()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)
    first = StatsState(shapes, 2)
    first.buffer_rows = 6
    run(first, batches[:2])
    saved = first.to_arrays(pending=True)
    assert "vec:pending_scores" in saved and "maps:pending_counts" in saved
    resumed = StatsState(shapes, 2)
    resumed.buffer_rows = 6
    resumed.load_arrays(saved)
    run(resumed, batches[2:])
    for k, v in resumed.to_arrays().items():
        assert v.tobytes() == b[k].tobytes(), k
