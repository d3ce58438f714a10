"""Class labels from image paths (dvis.imaging.labels): class folders, split folders, labels files,
label words in file names."""
from __future__ import annotations

import pytest

from dvis.errors import DvisError
from dvis.imaging.labels import class_folder, class_in_name, image_labels, source_labels


def test_labels_from_a_file_and_from_class_folders(tiny_blob, tmp_path):
    _, _, model, source = tiny_blob
    table = tmp_path / "labels.txt"
    table.write_text("".join(f"{name} {'odd' if i % 2 else 'even'}\n" for i, name in enumerate(source.names[:10])))
    classes, labels = source_labels(source, table)
    assert classes == ["even", "odd"] and labels[:10].tolist() == [0, 1] * 5 and (labels[10:] == -1).all()
    # Class folders follow the model's label order when every folder is one of its labels.
    classes, labels = source_labels(source, known=["z", "b", "a"])
    assert classes == ["z", "b", "a"] and labels[0] == 2 and labels[-1] == 1
    table.write_text("just-one-token\n")
    with pytest.raises(DvisError, match="expected '<image name> <class>'"):
        source_labels(source, table)
    table.write_text("nosuchimage.png cat\n")
    with pytest.raises(DvisError, match="names none"):
        source_labels(source, table)


def test_class_folder_is_the_parent_or_the_folder_under_the_split():
    assert class_folder("cat/img_1.png") == "cat"
    assert class_folder("/data/train/dog/x.jpg") == "dog"
    assert class_folder("img.png") is None and class_folder("/img.png") is None
    assert class_folder("data/test/cat/x.png", "test") == "cat"
    assert class_folder("test/cat/sub/x.png", "test") == "cat"  # the folder right under the split
    assert class_folder("data/test/x.png", "test") is None  # not in a class folder
    assert class_folder("data/train/cat/x.png", "test") is None


def test_every_reader_of_class_folders_gets_the_same_classes(tmp_path):
    """The unit statistics (source_labels), the CIFAR arrays (load_split) and the split rule of
    ``dvis evaluate`` (class_folder with a split) name the same class for each image."""
    import numpy as np
    from PIL import Image

    from dvis.imaging.datasets import open_source
    from dvis.imaging.folder_arrays import load_split

    for i, cls in enumerate(["dog", "cat", "cat", "bird10", "bird2"]):
        folder = tmp_path / "test" / cls
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "test" / "loose.png").write_bytes((tmp_path / "test" / "dog" / "0.png").read_bytes())
    source = open_source(tmp_path / "test")
    classes, labels = source_labels(source)
    by_stats = {n: classes[c] for n, c in zip(source.names, labels) if c >= 0}
    _, array_labels, array_classes, rels = load_split(tmp_path, "test", size=8)
    by_arrays = {r.removeprefix("test/"): array_classes[c] for r, c in zip(rels, array_labels)}
    by_split = {n: class_folder(f"test/{n}", "test") for n in source.names}
    assert by_stats == by_arrays == {n: c for n, c in by_split.items() if c is not None}
    assert by_split["loose.png"] is None and "loose.png" not in by_stats
    assert classes == ["bird2", "bird10", "cat", "dog"]  # natural order without the model's labels


def test_class_in_name_and_image_labels():
    assert class_in_name("cifar_dog_0001.png", ["cat", "dog"]) == 1
    assert class_in_name("cat_and_dog.png", ["cat", "dog"]) is None  # two labels: no single one
    assert class_in_name("hotdog.png", ["cat", "dog"]) is None  # whole words only
    classes, idx = image_labels(["b", None, "a"])
    assert classes == ["a", "b"] and idx.tolist() == [1, -1, 0]
    classes, idx = image_labels(["b", None, "a"], known=["z", "a", "b"])
    assert classes == ["z", "a", "b"] and idx.tolist() == [2, -1, 1]
    assert image_labels([None, None]) == ([], None) and image_labels(None) == ([], None)
