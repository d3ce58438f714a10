"""Launching the toolbox: run_toolbox.py and `dvis toolbox` read the same settings_local.py and
print warnings as one line each."""
import cv2

from dvis.cli import main as dvis_main
from dvis.commands import apps
from dvis.formats import paths
from helpers.toolbox import make_images, make_model_folder


def test_run_toolbox_and_dvis_toolbox_read_the_checkout_roots_settings_local(tmp_path, monkeypatch):
    model, images = make_model_folder(tmp_path), make_images(tmp_path)
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "settings_local.py").write_text("global_scale = 0.5\n")
    monkeypatch.setattr(paths, "checkout_root", lambda: root)
    monkeypatch.chdir(elsewhere)
    flags = ["--headless", "--model", str(model), "--images", str(images)]
    assert apps.main(flags + ["--out", str(tmp_path / "a")], repo_root=root) == 0
    assert dvis_main(["toolbox"] + flags + ["--out", str(tmp_path / "b")]) == 0
    for out in ("a", "b"):
        assert cv2.imread(str(tmp_path / out / "000-start.png")).shape == (465, 750, 3)  # global_scale 0.5


def test_run_toolbox_prints_warnings_as_one_line(tmp_path, monkeypatch, capsys):
    model, images = make_model_folder(tmp_path), make_images(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert apps.main(["--headless", "--model", str(model), "--images", str(images), "--weights", "none",
                      "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "random init" in line]
    assert len(warning) == 1 and warning[0].startswith("run_toolbox.py: warning: model tiny: ")
    assert "UserWarning" not in err and "warnings.warn" not in err
