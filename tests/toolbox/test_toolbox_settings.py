"""Settings: defaults, settings_local.py overrides, CLI overrides, unknown names and types, shipped templates."""
import subprocess
import sys
from pathlib import Path

import pytest

from dvis.errors import DvisError
from dvis.commands.apps import parse_set
from dvis.toolbox.settings import SETTING_NAMES, Settings, load_settings, read_local

REPO = Path(__file__).resolve().parents[2]


def test_defaults_layout_fills_the_base_window():
    s = Settings()
    h, w = s.window_size
    covered = sum(r[2] * r[3] for r in s.layout.values())
    assert covered == h * w  # panes tile the canvas without overlap or gaps
    for top, left, ph, pw in s.layout.values():
        assert 0 <= top and top + ph <= h and 0 <= left and left + pw <= w


def test_global_scale_scales_layout_and_canvas():
    s = load_settings(overrides={"global_scale": 0.5})
    assert s.canvas_shape() == (465, 750)
    assert s.scaled_layout()["layers"] == (30, 150, 420, 450)


def test_local_file_then_cli_override(tmp_path):
    local = tmp_path / "settings_local.py"
    local.write_text("import os\nmodel = 'alexnet'\nfont_scale = 1.5\ndef helper():\n    return 1\n")
    s = load_settings(local, {"font_scale": 2.0, "images": None})
    assert s.model == "alexnet" and s.font_scale == 2.0 and s.images == "input_images"


def test_unknown_setting_names_the_closest(tmp_path):
    local = tmp_path / "settings_local.py"
    local.write_text("global_scal = 0.8\n")
    with pytest.raises(DvisError, match="unknown setting 'global_scal'; did you mean 'global_scale'"):
        load_settings(local)
    with pytest.raises(DvisError, match="command line: unknown setting 'fnt_scale'.*'font_scale'"):
        load_settings(None, {"fnt_scale": 1})


def test_broken_local_file_is_one_line(tmp_path):
    local = tmp_path / "settings_local.py"
    local.write_text("model = (\n")
    with pytest.raises(DvisError, match="SyntaxError"):
        read_local(local)


def test_bad_values_are_reported():
    with pytest.raises(DvisError, match="global_scale"):
        load_settings(None, {"global_scale": 0})
    with pytest.raises(DvisError, match="back_presets"):
        load_settings(None, {"back_presets": (("deconv", "sharpen"),)})
    for bad in (-1, "half", float("nan")):
        with pytest.raises(DvisError, match="all_layers_budget"):
            load_settings(None, {"all_layers_budget": bad})


def test_parse_set_literals_and_strings():
    assert parse_set(["font_scale=1.5", "images=some/dir", "crop=False"]) == {
        "font_scale": 1.5, "images": "some/dir", "crop": False}
    with pytest.raises(DvisError, match="NAME=VALUE"):
        parse_set(["font_scale"])


@pytest.mark.parametrize("name", ["zf-cifar10", "alexnet", "vgg16", "resnet18", "custom"])
def test_templates_are_valid_settings(name):
    path = REPO / "settings" / f"settings_local.template-{name}.py"
    values = read_local(path)
    assert values and set(values) <= set(SETTING_NAMES)
    load_settings(path)


@pytest.mark.parametrize("name, value, expected", [
    ("global_scale", "big", "global_scale = 'big': expected float (an int is fine), got str"),
    ("color_text", (230, 230), "color_text = (230, 230): expected tuple[int, int, int], got tuple"),
    ("camera_id", True, "camera_id = True: expected int, got bool"),
    ("images", None, "images = None: expected str, got NoneType"),
    ("back_presets", (("grad",),), "back_presets = (('grad',),): expected tuple[tuple[str, str], ...], got tuple"),
    ("key_bindings", {"quit": "q"}, "key_bindings = {'quit': 'q'}: expected dict[str, tuple[str, ...]], got dict"),
])
def test_a_value_of_the_wrong_type_is_one_line_naming_setting_value_and_type(tmp_path, name, value, expected):
    local = tmp_path / "settings_local.py"
    local.write_text(f"{name} = {value!r}\n")
    with pytest.raises(DvisError) as info:
        load_settings(local)
    assert str(info.value) == f"{local}: {expected}"
    if value is not None:  # a flag left out (None) sets nothing
        with pytest.raises(DvisError) as info:
            load_settings(None, {name: value})
        assert str(info.value) == f"command line: {expected}"


def test_values_of_the_right_kind_are_taken_as_the_settings_type(tmp_path):
    s = load_settings(None, {"global_scale": 2, "window_size": [900, 1400], "images": tmp_path, "model": None,
                             "boost_indiv_choices": [0, 0.5], "key_bindings": {"quit": ["q"]}})
    assert s.global_scale == 2 and s.window_size == (900, 1400) and s.images == str(tmp_path)
    assert s.boost_indiv_choices == (0, 0.5) and s.key_bindings == {"quit": ("q",)} and s.model is None


def test_set_of_the_wrong_type_is_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "run_toolbox.py"), "--headless", "--set", "global_scale=big"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("run_toolbox.py: error: command line: global_scale = 'big': expected float "
                           "(an int is fine), got str\n")


def test_parse_set_keeps_a_text_setting_as_written():
    assert parse_set(["images=2024", "font_scale=2", "images_pattern=None"]) == {
        "images": "2024", "font_scale": 2, "images_pattern": None}
    assert load_settings(None, parse_set(["images=2024"])).images == "2024"  # a folder named 2024, not refused
