"""The spectral optimization methods through the pipeline and the CLI: sharding byte-equal, MACO
under the run's amplitude spectrum, accentuation from the top-1 images, several methods per layer,
one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dvis.formats.maxes import load_spectrum
from dvis.formats.unit_vis import UnitImages, opt_methods
from dvis.models.loading import load_model
from dvis.pipeline.distributed import Shard
from dvis.pipeline.optimize import OptSettings, merge_opt, optimize_units

from helpers.pipeline import dvis_cli, env_with_models, make_images, make_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    model_dir = make_model(root / "models" / "tiny-blob")
    make_images(root / "images", n=24)
    env = env_with_models(root / "models")
    r = dvis_cli(["maxes", "--model", "tiny-blob", "--images", str(root / "images"), "--run-dir", str(root / "run"),
                  "--top", "4", "--batch-size", "8", "--workers", "0", "--quiet"], env)
    assert r.returncode == 0, r.stderr[-2000:]
    return root, load_model(str(model_dir)), env


@pytest.mark.parametrize("method", ["fourier", "maco"])
def test_sharded_spectral_methods_merge_exactly(tiny, method):
    _, model, _ = tiny
    s = OptSettings(method=method, iters=4, seeds=2, batch_size=4)  # 2 units per batch
    one = optimize_units(model, "conv2", None, s)
    shares = [optimize_units(model, "conv2", None, s, shard=Shard(r, 2)) for r in range(2)]
    parts = [{"units": r.units, "images": r.images, "activations": r.activations, "attribution": r.attribution}
             for r in shares]
    merged = merge_opt("conv2", one.units, parts[::-1])
    assert merged.images.tobytes() == one.images.tobytes()
    assert merged.activations.tobytes() == one.activations.tobytes()
    assert merged.attribution.tobytes() == one.attribution.tobytes()
    assert one.attribution.shape == (3, 2, 16, 16) and (one.attribution > 0).any()


def test_spectral_images_do_not_depend_on_their_batch(tiny):
    _, model, _ = tiny
    s = OptSettings(method="maco", iters=4, seeds=2)
    whole = optimize_units(model, "fc", [0, 2, 3], s)
    alone = optimize_units(model, "fc", [2], s)
    np.testing.assert_allclose(whole.activations[1], alone.activations[0], rtol=1e-4, atol=1e-5)


def cli_optimize(tiny, out, *extra):
    root, _, env = tiny
    return dvis_cli(["optimize", "--model", "tiny-blob", "--layers", "conv2", "--out", str(out), "--run-dir",
                     str(root / "run"), "--iters", "4", "--seeds", "2", "--opt-batch-size", "2", "--quiet", *extra], env)


def test_maco_shards_equal_one_process_and_methods_coexist(tiny, tmp_path):
    root = tiny[0]
    one, files = tmp_path / "one", tmp_path / "files"
    assert cli_optimize(tiny, one).returncode == 0  # pixel: opt, opt_seeds, opt.json as before
    r = cli_optimize(tiny, one, "--method", "maco")
    assert r.returncode == 0, r.stderr[-2000:]
    for i in range(2):
        r = cli_optimize(tiny, files, "--method", "maco", "--shard", f"{i}/2")
        assert r.returncode == 0, r.stderr[-2000:]
    reader, sharded = UnitImages(one), UnitImages(files)
    for kind in ("opt_maco", "opt_seeds_maco", "attr_maco"):
        a = (one / "conv2" / reader.layout("conv2")[kind]["file"]).read_bytes()
        assert a == (files / "conv2" / sharded.layout("conv2")[kind]["file"]).read_bytes(), kind
    assert opt_methods(reader.layout("conv2")) == ["pixel", "maco"]
    meta = json.loads((one / "conv2" / "opt_maco.json").read_text())
    pixel = json.loads((one / "conv2" / "opt.json").read_text())
    assert meta["method"] == "maco" and meta["settings"]["method"] == "maco"
    assert meta["magnitude"].startswith("mean amplitude spectrum of the 24 images")
    assert load_spectrum(root / "run")[1] == 24
    assert pixel["method"] == "pixel" and "method" not in pixel["settings"]  # the original key, unchanged
    assert len(meta["units"]) == 3 and all(len(u["opt_activations"]) == 2 for u in meta["units"])


def test_accentuate_starts_from_the_top1_images(tiny, tmp_path):
    root, model, _ = tiny
    r = cli_optimize(tiny, tmp_path / "acc", "--method", "accentuate")
    assert r.returncode == 0, r.stderr[-2000:]
    layout = UnitImages(tmp_path / "acc").layout("conv2")
    assert {"opt_accentuate", "opt_seeds_accentuate", "attr_accentuate"} <= set(layout)
    # Without steps the image is the top-1 image itself (the maxes run's, as it decoded it).
    from dvis.pipeline.precompute import top1_images
    starts = top1_images(model, root / "run", "conv2", np.arange(3))
    assert starts.shape == (3, 3, 16, 16) and starts.std() > 0.05
    res = optimize_units(model, "conv2", None, OptSettings(method="accentuate", iters=1, seeds=1, lr=1e-9),
                         start_pixels=starts)
    pixels = res.pixels[:, 0] + np.asarray(model.mean, np.float32).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(pixels, starts.clip(1e-3, 1 - 1e-3), atol=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["--method", "nope"], "invalid choice: 'nope'"),
    (["--method", "maco", "--crop", "0.9,0.5"], "--crop expects a range LO,HI"),
    (["--method", "pixel", "--diversity", "1"], "--diversity needs a method other than pixel"),
    (["--method", "fourier", "--objective", "class_token"], "has no class token"),
])
def test_bad_arguments_are_one_line(tiny, tmp_path, extra, message):
    r = cli_optimize(tiny, tmp_path / "bad", *extra)
    assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_accentuate_without_a_run_is_one_line(tiny, tmp_path):
    _, _, env = tiny
    r = dvis_cli(["optimize", "--model", "tiny-blob", "--layers", "conv2", "--out", str(tmp_path / "x"), "--run-dir",
                  str(tmp_path / "none"), "--method", "accentuate", "--iters", "2", "--quiet"], env)
    assert r.returncode != 0 and "run `dvis maxes` first" in r.stderr and "Traceback" not in r.stderr
