"""The image the toolbox starts on suits the model's input size: an ImageNet-sized model skips the
32-px CIFAR images (they sort first in input_images/) for the first photo. Bad inputs: unreadable
headers, named pipes, no camera."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np

from helpers.badfiles import returns_within, write_bad_folder

from dvis.toolbox.inputs import FileSource, suited_start

REPO = Path(__file__).resolve().parents[2]


def test_suited_start():
    sizes = [(128, 128), None, (100, 300), (512, 512)]  # the samples: CIFAR at 128 px, then photos
    assert suited_start(sizes, (224, 224)) == 3
    assert suited_start(sizes, (32, 32)) == 0
    assert suited_start([(32, 32), (100, 300)], (200, 200), share=0.5) == 1 and suited_start(sizes, (300, 300)) == 3
    assert suited_start(sizes, (64, 64)) == 0
    assert suited_start([(32, 32)], (224, 224)) == 0  # none suits: the first


def test_start_for_reads_headers(tmp_path):
    for name, side in (("a_small.png", 32), ("b_small.png", 32), ("c_photo.jpg", 300)):
        cv2.imwrite(str(tmp_path / name), np.zeros((side, side, 3), np.uint8))
    (tmp_path / "0_broken.jpg").write_bytes(b"not an image")
    files = FileSource(str(tmp_path))
    assert files.start_for((224, 224)) == files.paths.index(str(tmp_path / "c_photo.jpg"))
    assert files.start_for((32, 32)) == 1  # the first readable image that suits; the broken one is skipped
    assert files.start_for(None) == 0


def test_sample_images_start_imagenet_models_on_a_photo():
    files = FileSource(str(REPO / "input_images"))
    assert Path(files.name(files.start_for((224, 224)))).name.startswith("photo_")
    assert files.start_for((32, 32)) == 0


def test_start_for_passes_over_a_bomb_and_a_named_pipe(tmp_path):
    """Headers that cannot be read give no size: a decompression bomb (Pillow's own error) and a file
    that became a named pipe after the listing (opening it must not wait for a writer)."""
    write_bad_folder(tmp_path)
    cv2.imwrite(str(tmp_path / "z_photo.png"), np.zeros((300, 300, 3), np.uint8))
    files = FileSource(str(tmp_path))
    (tmp_path / "cat_0.png").unlink()
    os.mkfifo(tmp_path / "cat_0.png")
    start = returns_within(lambda: files.start_for((224, 224)), tmp_path / "cat_0.png")
    assert Path(files.name(start)).name == "z_photo.png"


def test_no_camera_is_one_line_without_opencvs_log():
    """Each 'c' without a camera: the toolbox's one status line, none of OpenCV's multi-line blocks
    (its log is silenced for the probe only: the level is the same after)."""
    code = textwrap.dedent("""
        import cv2
        from dvis.errors import DvisError
        from dvis.toolbox.inputs import Camera
        level = cv2.utils.logging.getLogLevel()
        for _ in range(2):
            try:
                Camera(99).close()
            except DvisError as exc:
                print(exc)
        assert cv2.utils.logging.getLogLevel() == level
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["camera 99 is not available; staying on image files"] * 2
    assert proc.stderr == ""
