"""Where dvis looks things up: the one settings_local.py rule (the current folder, else a checkout's
root, else the config folder) and which unit images count as shipped."""
from pathlib import Path

from dvis.cli import main as dvis_main
from dvis.formats import paths
from dvis.models.loading import load_model
from helpers.toolbox import make_model_folder


def test_settings_local_is_found_in_the_current_folder_then_the_checkout_root_then_the_config_folder(
        tmp_path, monkeypatch):
    here, root, config = (tmp_path / n for n in ("here", "repo", "config"))
    for d in (here, root, config):
        d.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr(paths, "checkout_root", lambda: root)
    monkeypatch.setenv("DVIS_CONFIG_DIR", str(config))
    assert paths.settings_local_candidates() == [d.resolve() / "settings_local.py" for d in (here, root, config)]
    assert paths.find_settings_local() is None
    for d in (config, root, here):  # each nearer file wins over the farther ones
        (d / "settings_local.py").write_text("font_scale = 1.0\n")
        assert paths.find_settings_local() == d.resolve() / "settings_local.py"
    shown = [p for what, p in paths.lookup_report() if what == "settings_local.py"]
    assert shown == paths.settings_local_candidates()  # `dvis info --paths` shows the same rule


def test_an_installed_package_has_no_checkout_root(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "dvis"
    (package / "_data").mkdir(parents=True)
    monkeypatch.setattr(paths, "_PACKAGE", package)
    monkeypatch.chdir(tmp_path)
    assert paths.checkout_root() is None
    assert len(paths.settings_local_candidates()) == 2
    monkeypatch.setattr(paths, "_PACKAGE", Path(paths.__file__).resolve().parents[1])
    assert paths.checkout_root() == Path(paths.__file__).resolve().parents[2]


def test_unit_images_of_a_users_own_model_are_computed_and_only_the_packaged_ones_shipped(tmp_path, capsys):
    own = load_model(str(make_model_folder(tmp_path)))  # its unit_vis/ was just written, as precompute does
    assert paths.unit_vis_origin(own) == f"computed ({own.unit_vis_dir})"
    assert dvis_main(["vis-info", "--model", str(own.folder)]) == 0
    assert f"unit images in {own.unit_vis_dir} (computed)" in capsys.readouterr().out
    packaged = load_model(None)  # the default model ships its unit images
    assert paths.unit_vis_origin(packaged) == f"shipped ({packaged.shipped_unit_vis_dir})"
