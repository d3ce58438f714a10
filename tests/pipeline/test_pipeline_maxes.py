"""Max tracker: known top-k and positions, tie order, skipping bad files, resume, shards, torchrun, format."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dvis.errors import DvisError
from dvis.imaging.datasets import open_source
from dvis.pipeline.maxes import TopKState, TrackConfig, merge_topk, track_maxes
from dvis.formats.maxes import SPECTRUM_SCALE, load_result, load_spectrum, merge_results, save_result
from dvis.optvis.fourier import amplitude_spectrum
from dvis.models.loading import load_model

from helpers.pipeline import (SIZE, blob_image, dvis_cli, env_with_models, expected_conv1_top, make_images,  # noqa: E402
                              make_model, maxes_three_ways)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("maxes")
    model_dir = make_model(root / "models" / "tiny-blob")
    specs = make_images(root / "images", n=24, bad=True)
    return root, model_dir, specs


def cfg(**kw):
    base = dict(top=4, batch_size=5, workers=0, progress=False)
    base.update(kw)
    return TrackConfig(**base)


def arrays_equal(a, b):
    assert a.layers == b.layers and a.shapes == b.shapes and a.skipped == b.skipped
    for n in a.layers:
        assert a.values[n].tobytes() == b.values[n].tobytes(), n
        assert np.array_equal(a.index[n], b.index[n]), n
        assert np.array_equal(a.pos[n], b.pos[n]), n
    assert a.spectrum is not None and a.spectrum.dtype == np.int64 and a.spectrum_images == b.spectrum_images
    assert a.spectrum.tobytes() == b.spectrum.tobytes()  # integer sums: exact whatever the split


def test_known_top_k_positions_and_skipped_files(setup):
    _, model_dir, specs = setup
    model = load_model(str(model_dir))
    source = open_source(setup[0] / "images")
    assert len(source) == 27  # 24 images plus 3 unreadable ones
    with pytest.warns(UserWarning, match="unreadable"):
        result = track_maxes(model, source, config=cfg())
    assert sorted(source.names[i] for i in result.skipped) == ["b/zz_corrupt.jpg", "b/zz_empty.png", "b/zz_text.png"]
    good = [i for i in range(len(source)) if i not in result.skipped]  # source index of spec j
    expected = [good[j] for j in expected_conv1_top(specs, 4)]
    assert result.index["conv1"][0].tolist() == expected
    # Positions and values: recompute conv1 unit 0 (3x3 box sum of all channels) with numpy.
    for slot, i in enumerate(expected):
        b, y, x = specs[good.index(i)]
        m = np.pad(blob_image(b, y, x).astype(np.float64).sum(2) / 255, 1)
        conv = np.array([[m[r:r + 3, c:c + 3].sum() for c in range(SIZE)] for r in range(SIZE)])
        assert result.pos["conv1"][0, slot].tolist() == list(np.unravel_index(conv.argmax(), conv.shape))
        assert result.values["conv1"][0, slot] == pytest.approx(conv.max(), rel=1e-5)
    assert result.shapes == {"conv1": (2, SIZE, SIZE), "pool1": (2, 8, 8), "conv2": (3, 8, 8), "fc": (4,)}
    assert (result.index["fc"] >= 0).all() and not set(result.index["fc"].ravel()) & set(result.skipped)
    # fc values are recorded before the in-place ReLU that follows the layer.
    assert (result.values["fc"][3] < 0).all() and (result.values["fc"][:3] > 0).all()


def test_ties_break_by_lower_image_index():
    values = torch.tensor([[1.0, 2.0, 2.0, 2.0, -torch.inf]])
    index = torch.tensor([[0, 9, 3, 7, -1]])
    pos = torch.arange(10, dtype=torch.int32).view(1, 5, 2)
    v, i, p = merge_topk(values, index, pos, 3)
    assert i.tolist() == [[3, 7, 9]] and v.tolist() == [[2.0, 2.0, 2.0]]
    assert p[0, :, 0].tolist() == [4, 6, 2]
    # Images 4 and 5 of the blob set tie exactly: the merge must keep 4 before 5 whatever the batching.
    v, i, _ = merge_topk(torch.tensor([[5.0, 5.0]]), torch.tensor([[5, 4]]), torch.zeros(1, 2, 2, dtype=torch.int32), 2)
    assert i.tolist() == [[4, 5]]
    # The running state: a tie with the k-th entry enters only with a lower image index.
    state = TopKState({"l": 1}, 2)
    state.update("l", torch.tensor([[3.0], [2.0]]), torch.tensor([10, 11]))
    state.update("l", torch.tensor([[2.0]]), torch.tensor([12]))  # later tie: loses
    assert state.index["l"].tolist() == [[10, 11]]
    state.update("l", torch.tensor([[2.0], [2.0]]), torch.tensor([-1, 7]))  # earlier tie (a shard merge): wins
    assert state.index["l"].tolist() == [[10, 7]]
    # After merging another share, a tie with one of its images still goes to the lower index.
    merged = TopKState({"l": 1}, 1)
    merged.merge(state)
    merged.update("l", torch.tensor([[3.0]]), torch.tensor([4]))
    assert merged.index["l"].tolist() == [[4]]


def test_forwards_in_other_threads_are_not_tracked():
    """The toolbox's workers may run the same net while a run tracks it: only the run's own
    thread's forwards reach the state."""
    import threading

    from dvis.pipeline.maxes import max_hooks

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x = torch.ones(1, 1, 6, 6)
    with torch.no_grad():
        expected = net(x)[0]
    state = TopKState({"0": 2, "2": 3}, 2)
    with max_hooks(net, state, ["0", "2"]) as batch, torch.inference_mode():
        batch["index"] = torch.tensor([0])
        errors = []

        def other_forward():
            try:
                with torch.inference_mode():
                    net(torch.full((1, 1, 6, 6), 100.0))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        other = threading.Thread(target=other_forward)
        other.start()
        other.join()
        assert not errors, errors
        assert (state.index["0"] == -1).all() and (state.index["2"] == -1).all()
        net(x)
    assert state.index["0"][:, 0].tolist() == [0, 0] and (state.index["0"][:, 1] == -1).all()
    assert torch.equal(state.values["2"][:, 0], expected)


@pytest.mark.filterwarnings("ignore:skipping unreadable")
def test_batching_sharding_and_resume_do_not_change_the_result(setup, tmp_path):
    _, model_dir, _ = setup
    model = load_model(str(model_dir))
    source = open_source(setup[0] / "images")
    full = track_maxes(model, source, config=cfg())
    shards = [track_maxes(model, source, config=cfg(), shard=(i, 3)) for i in range(3)]
    arrays_equal(merge_results(shards), full)

    ckpt = tmp_path / "ckpt.npz"

    def stop_after_3(done):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track_maxes(model, source, config=cfg(checkpoint_every=0), checkpoint=ckpt, on_batch=stop_after_3)
    with np.load(ckpt) as z:
        assert int(z["done"]) == 3
    seen = []
    resumed = track_maxes(model, source, config=cfg(checkpoint_every=0), checkpoint=ckpt, on_batch=seen.append)
    assert seen[0] == 4  # resumed after the third batch instead of starting over
    arrays_equal(resumed, full)


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(setup, tmp_path):
    root, model_dir, _ = setup
    script = textwrap.dedent(f'''
        import os, signal, sys, warnings
        warnings.simplefilter("ignore")
        import numpy as np
        from dvis.imaging.datasets import open_source
        from dvis.pipeline.maxes import TrackConfig, track_maxes
        from dvis.models.loading import load_model
        kill_at = int(sys.argv[1])
        model = load_model({str(model_dir)!r})
        source = open_source({str(root / "images")!r})
        def hook(done):
            if done == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        r = track_maxes(model, source, config=TrackConfig(top=4, batch_size=3, workers=1, checkpoint_every=0,
                        progress=False), checkpoint={str(tmp_path / "ckpt.npz")!r}, on_batch=hook)
        np.savez({str(tmp_path / "out.npz")!r}, **{{f"{{n}}:{{a}}": getattr(r, a)[n] for n in r.layers
                 for a in ("values", "index", "pos")}})
    ''')
    run = lambda kill_at: subprocess.run([sys.executable, "-c", script, str(kill_at)], cwd=REPO, timeout=120)  # noqa: E731
    assert run(4).returncode == -9
    assert not (tmp_path / "out.npz").exists()
    with np.load(tmp_path / "ckpt.npz") as z:
        assert int(z["done"]) == 4
    assert run(-1).returncode == 0
    with np.load(tmp_path / "out.npz") as z:
        resumed = dict(z)
    (tmp_path / "ckpt.npz").unlink()
    assert run(-1).returncode == 0
    with np.load(tmp_path / "out.npz") as z:
        for k, v in z.items():
            assert v.tobytes() == resumed[k].tobytes(), k


def test_format_round_trips_without_pickle(setup, tmp_path):
    _, model_dir, _ = setup
    model = load_model(str(model_dir))
    source = open_source(setup[0] / "images")
    with pytest.warns(UserWarning):
        result = track_maxes(model, source, config=cfg())
    save_result(result, tmp_path, {"model": str(model_dir), "fingerprint": "x"}, source.names)
    back, manifest, names = load_result(tmp_path)
    arrays_equal(back, result)
    assert names == source.names and manifest["format"] == "dvis-maxes" and manifest["version"] == 1
    assert json.loads((tmp_path / "manifest.json").read_text())["shapes"]["conv1"] == [2, SIZE, SIZE]
    with np.load(tmp_path / "maxes.npz", allow_pickle=False) as z:
        assert "fc:pos" not in z and z["conv1:values"].dtype == np.float32


def test_the_run_keeps_the_images_mean_amplitude_spectrum(setup, tmp_path):
    root, model_dir, _ = setup
    model = load_model(str(model_dir))
    source = open_source(root / "images")
    with pytest.warns(UserWarning):
        result = track_maxes(model, source, config=cfg())
    save_result(result, tmp_path, {"model": str(model_dir), "fingerprint": "x"}, source.names)
    mean, count = load_spectrum(tmp_path)
    ok = [i for i in range(len(source)) if i not in result.skipped]
    pixels = torch.stack([torch.from_numpy(np.ascontiguousarray(source.load(i))).permute(2, 0, 1) for i in ok])
    expected = amplitude_spectrum(pixels.float() / 255).mean(0).numpy()
    assert count == len(ok) == 24 and mean.shape == (3, SIZE, SIZE // 2 + 1)
    np.testing.assert_allclose(mean, expected, atol=1 / SPECTRUM_SCALE, rtol=1e-6)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_tar_sources_match_the_folder(setup, tmp_path, suffix):
    root = setup[0]
    archive = tmp_path / f"images{suffix}"
    with tarfile.open(archive, "w:gz" if suffix.endswith("gz") else "w") as tf:
        for p in sorted((root / "images").rglob("*"), reverse=True):  # archive order must not matter
            if p.is_file():
                tf.add(p, arcname=f"imgs/{p.relative_to(root / 'images')}")
    folder, tar = open_source(root / "images"), open_source(archive)
    assert tar.names == [f"imgs/{n}" for n in folder.names]
    assert np.array_equal(tar.load(0), folder.load(0))


def test_cli_shards_merge_and_torchrun_equal_one_process(setup, tmp_path):
    root, model_dir, _ = setup
    env = env_with_models(model_dir.parent)
    common = ["--model", "tiny-blob", "--images", str(root / "images"), "--top", "4", "--batch-size", "4",
              "--workers", "0", "--quiet"]
    assert "3 skipped" in maxes_three_ways(common, tmp_path, env)
    one = load_result(tmp_path / "one")[0]
    arrays_equal(load_result(tmp_path / "sharded")[0], one)
    arrays_equal(load_result(tmp_path / "dist")[0], one)
    r = dvis_cli(["maxes", *common, "--run-dir", str(tmp_path / "one")], env)
    assert "already complete" in r.stdout


def test_weights_digest_cache_rehashes_new_weights(monkeypatch):
    """Inside weights_cache() a net is hashed once; weights loaded anew are hashed again, and
    outside the scope nothing is cached (the CLI opens one scope per command)."""
    import hashlib

    import dvis.formats.digest as mr

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    hashed = []
    real_sha1 = hashlib.sha1
    monkeypatch.setattr(mr.hashlib, "sha1", lambda *a: hashed.append(1) or real_sha1(*a))
    plain = mr.weights_digest(net)
    assert mr.weights_digest(net) == plain and len(hashed) == 2  # no scope: hashed at every call
    with mr.weights_cache():
        assert mr.weights_digest(net) == plain and mr.weights_digest(net) == plain
        assert len(hashed) == 3  # once for both calls
        other = {k: v + 1 for k, v in net.state_dict().items()}
        net.load_state_dict(other)
        changed = mr.weights_digest(net)
        assert changed != plain and len(hashed) == 4
        with torch.no_grad():
            net[0].weight.mul_(2)  # an in-place write bumps the version counter
        assert mr.weights_digest(net) not in (plain, changed) and len(hashed) == 5
    assert mr._digests is None


@pytest.mark.parametrize("merge_rows", [1, 30, 512])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("shuffled", [False, True])
def test_running_top_k_equals_a_full_sort(sign, shuffled, merge_rows):
    """TopKState.update against sorting every (value, image) pair at once: many ties (values on a
    coarse grid), NaN maps, skipped images (index -1), uneven batches, images in index order or
    shuffled (as shard merges and resumes feed them), and candidates merged after every batch,
    every few batches, or all at the end."""
    g = torch.Generator().manual_seed(3 + sign + 2 * shuffled)
    units, k, n = 7, 4, 150
    maps = torch.randint(-3, 4, (n, units, 3, 5), generator=g).float() / 2
    maps[5, 2] = torch.nan
    order = torch.randperm(n, generator=g) if shuffled else torch.arange(n)
    skipped = set(order[torch.randint(0, n, (12,), generator=g)].tolist())
    state, seen = TopKState({"l": units}, k, sign=sign), 0
    state.merge_rows = merge_rows
    while seen < n:
        b = int(torch.randint(1, 20, (1,), generator=g))
        idx = order[seen:seen + b]
        seen += b
        m = maps[idx]
        scores = m.flatten(2).amax(2) if sign == 1 else m.flatten(2).amin(2)
        state.update("l", scores, torch.tensor([-1 if int(i) in skipped else int(i) for i in idx]), maps=m)
    for u in range(units):
        entries = []
        for i in range(n):
            flat = maps[i, u].flatten()
            if i in skipped or torch.isnan(flat).any():
                continue
            score = float(flat.max()) if sign == 1 else float(flat.min())
            entries.append((-sign * score, i, int((flat * sign).argmax())))
        entries.sort()
        want = entries[:k] + [(torch.inf, -1, 0)] * (k - len(entries[:k]))
        assert state.index["l"][u].tolist() == [e[1] for e in want]
        assert state.values["l"][u].tolist() == [-e[0] if e[1] >= 0 else -torch.inf for e in want]  # stored as sign * score
        got_pos = state.pos["l"][u].tolist()
        assert [p[0] * 5 + p[1] for p, e in zip(got_pos, want) if e[1] >= 0] == [e[2] for e in want if e[1] >= 0]


@pytest.mark.filterwarnings("ignore:skipping unreadable")
def test_cpu_runs_decode_in_idle_priority_workers(setup, tmp_path, monkeypatch):
    """On a CPU device the decoding workers decode at SCHED_IDLE (they must not preempt the forward's
    threads), or at their default priority while the parent waits for a batch (see
    tests/imaging/test_worker_priority.py), with one OpenCV thread (inherited, since a call into a
    forked pool can deadlock); the parent keeps its priority and its OpenCV threads; the run's
    result is unchanged."""
    import os

    import cv2

    from dvis.imaging.decode import Decoder

    _, model_dir, _ = setup
    model = load_model(str(model_dir))
    source = open_source(setup[0] / "images")
    item = Decoder.item

    def spy(self, i):  # runs in the forked workers: record each one's scheduling policy
        with open(tmp_path / f"policy-{os.getpid()}", "a") as f:
            f.write(f"{os.sched_getscheduler(0)} {cv2.getNumThreads()}\n")
        return item(self, i)

    monkeypatch.setattr(Decoder, "item", spy)
    threads = cv2.getNumThreads()
    cv2.resize(np.zeros((375, 500, 3), np.float32), (224, 224), interpolation=cv2.INTER_AREA)  # the pool runs
    result = track_maxes(model, source, config=cfg(workers=2))
    policies = {line for p in tmp_path.glob("policy-*") for line in p.read_text().splitlines()}
    assert len(list(tmp_path.glob("policy-*"))) == 2 and policies <= {f"{os.SCHED_IDLE} 1", f"{os.SCHED_OTHER} 1"}
    assert os.sched_getscheduler(0) != os.SCHED_IDLE and cv2.getNumThreads() == threads
    monkeypatch.undo()
    arrays_equal(result, track_maxes(model, source, config=cfg()))


@pytest.mark.parametrize("bad", [{"top": 0}, {"top": -1}, {"batch_size": 0}, {"workers": -1}, {"bottom_k": 1.5}])
def test_track_config_refuses_counts_out_of_range(bad):
    with pytest.raises(DvisError, match=f"TrackConfig.{next(iter(bad))} must be an integer of at least"):
        TrackConfig(**bad)
