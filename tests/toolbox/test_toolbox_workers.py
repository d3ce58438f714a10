"""Worker threads: latest-job-only compute with a pause after keys, errors as output, the byte-bounded
unit-image cache and loader, and the frame sources."""
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from dvis.errors import DvisError
from dvis.toolbox.inputs import Camera, FileSource, crop_to_aspect, model_view
from dvis.toolbox.render import NotThere
from dvis.toolbox.workers import ByteCache, ComputeWorker, ImageLoader, Job, Output, class_probs
from helpers.toolbox import make_images


class FakeModel:
    def __init__(self):
        self.net = SimpleNamespace(state_dict=dict, load_state_dict=lambda sd: None)
        self.checkpoints = []


def job(i, **kw):
    return Job(frame_id=i, frame=np.zeros((2, 2, 3), np.uint8), **kw)


def test_worker_computes_only_the_latest_job():
    gate = threading.Event()
    seen = []

    def slow(model, j, settings):
        gate.wait(5)
        seen.append(j.frame_id)
        return Output(j)

    w = ComputeWorker(FakeModel(), SimpleNamespace(pause_after_key_s=0.0), slow)
    try:
        w.submit(job(0))
        time.sleep(0.1)  # job 0 is running and blocked on the gate
        for i in range(1, 20):
            w.submit(job(i))
        assert w.busy
        gate.set()
        assert w.wait(5)
        assert seen == [0, 19] and w.output.job.frame_id == 19 and w.passes == 2
        w.submit(job(19))  # same key as the last job: ignored
        assert not w.busy and w.passes == 2
    finally:
        w.close()


def test_worker_pauses_after_keys():
    started = []
    w = ComputeWorker(FakeModel(), SimpleNamespace(pause_after_key_s=0.3),
                      lambda m, j, s: started.append(time.monotonic()) or Output(j))
    try:
        t0 = time.monotonic()
        w.note_key()
        w.submit(job(1))
        assert w.wait(5)
        assert started[0] - t0 >= 0.25
    finally:
        w.close()


def test_worker_errors_become_output():
    def boom(model, j, settings):
        raise ValueError("bad frame\nsecond line")

    w = ComputeWorker(FakeModel(), SimpleNamespace(pause_after_key_s=0.0), boom)
    try:
        w.submit(job(1))
        assert w.wait(5)
        assert w.output.error == "ValueError: bad frame"
    finally:
        w.close()


def test_job_key_covers_what_is_shown():
    assert job(1).key == job(1).key
    assert job(1).key != job(1, back=("conv1", 0, "grad")).key
    assert job(1).key != job(1, checkpoint=0).key != job(1, occlusion=True).key


def test_class_probs_only_for_score_vectors():
    acts = {"conv": np.zeros((2, 3, 3)), "fc": np.array([0.0, np.log(3.0)])}
    np.testing.assert_allclose(class_probs(acts, ["conv", "fc"], 2), [0.25, 0.75])
    assert class_probs(acts, ["conv", "fc"], 10) is None
    assert class_probs(acts, ["fc", "conv"], 0) is None


def test_byte_cache_evicts_least_recently_used_by_bytes():
    cache = ByteCache(max_bytes=250)
    for k in "abc":
        cache.put(k, np.zeros(100, np.uint8))
    assert cache.get("a") is NotThere.LOADING and cache.bytes == 200
    cache.get("b")
    cache.put("d", np.zeros(100, np.uint8))
    assert cache.get("c") is NotThere.LOADING and cache.get("b") is not NotThere.LOADING
    cache.put("none", NotThere.ABSENT)  # "absent" results are cached for free
    assert cache.get("none") is NotThere.ABSENT and cache.bytes == 200


def test_image_loader_loads_wanted_keys():
    calls = []

    def load(key):
        calls.append(key)
        time.sleep(0.05)
        return None if key == "absent" else np.full(3, len(key), np.uint8)

    loader = ImageLoader(load, 10_000)
    try:
        loader.want(["ab", "absent"])
        assert loader.get("ab") is NotThere.LOADING
        assert loader.wait(5)
        assert loader.get("ab").tolist() == [2, 2, 2] and loader.get("absent") is NotThere.ABSENT
        loader.want(["ab"])
        assert loader.wait(5) and calls == ["ab", "absent"]  # cached keys are not reloaded
    finally:
        loader.close()


def test_image_loader_survives_load_errors():
    loader = ImageLoader(lambda key: 1 / 0, 1000)
    try:
        loader.want(["x"])
        assert loader.wait(5) and loader.get("x") is NotThere.ABSENT
    finally:
        loader.close()


def test_crop_to_aspect_and_model_view():
    frame = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    assert crop_to_aspect(frame, (1, 1)).shape == (40, 40, 3)
    np.testing.assert_array_equal(crop_to_aspect(frame, (1, 1)), frame[:, 10:50])
    assert crop_to_aspect(frame, (48, 16)).shape[:2] == (40, 13)
    assert model_view(frame, (32, 32), crop=False, channels=3).shape == (40, 60, 3)
    gray = model_view(frame, (32, 32), crop=True, channels=1)
    assert gray.shape == (40, 40, 3) and (gray[..., 0] == gray[..., 2]).all()


def test_file_source_skips_unreadable_in_both_directions(tmp_path):
    src = FileSource(str(make_images(tmp_path)))
    names = [p.rsplit("/", 1)[1] for p in src.paths]
    assert names == ["img1.png", "img2.png", "img3.png", "img4.png", "img5.png", "img6.jpg", "img10.bmp"]
    for i in range(5):
        index, frame, msg = src.read(i)
        assert index == i and frame.dtype == np.uint8 and frame.shape[2] == 3 and msg == ""
    assert src.read(5, 1)[0] == 6 and "img6.jpg" in src.read(5, 1)[2]
    assert src.read(5, -1)[0] == 4


def test_file_source_missing_folder_is_a_message(tmp_path):
    src = FileSource(str(tmp_path / "nope"))
    assert len(src) == 0 and "nope" in src.message and src.read(3) == (0, None, src.message)


def test_missing_camera_is_a_dvis_error():
    with pytest.raises(DvisError, match="camera 97 is not available"):
        Camera(97)
