"""Launching the toolbox: run_toolbox.py and `dvis toolbox` read the same settings_local.py and
print warnings as one line each; `dvis serve` says what it loads and stops on Ctrl-C."""
import signal
import subprocess
import sys

import cv2
import pytest

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


def test_dvis_serve_says_what_it_loads_at_once_and_stops_on_ctrl_c(tmp_path):
    pytest.importorskip("uvicorn")
    model = make_model_folder(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "dvis", "serve", "--model", str(model), "--port", "0",
                             "--no-token", "--images", str(make_images(tmp_path))],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = [proc.stderr.readline()]
        while "open  http://" not in lines[-1] and lines[-1]:
            lines.append(proc.stderr.readline())
        assert lines[0] == f"dvis serve: loading {model} ...\n", lines  # before the model loads
        assert lines[-1].strip().startswith("open  http://127.0.0.1:"), lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130 and "interrupted" in proc.stderr.read()
    finally:
        proc.kill()
        proc.stderr.close()
