"""The image the toolbox starts on suits the model's input size: an ImageNet-sized model skips the
32-px CIFAR images (they sort first in input_images/) for the first photo."""
from pathlib import Path

import cv2
import numpy as np

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
