"""Where dvis looks things up and writes them: models, unit images, settings, sample images.

The user's folders come from :mod:`platformdirs` (XDG on Linux, ~/Library on macOS, AppData on
Windows); ``$DVIS_DATA_DIR`` and ``$DVIS_CONFIG_DIR`` override them (tests, shared machines).
What the package ships (the default model, sample images, settings templates) lies in
``dvis/_data`` inside an installed wheel, and at the repository root in a source checkout.

Model folders are searched in ``$DVIS_MODELS`` (os.pathsep-separated), ``./models``, the user's
data folder (``<data>/models``), then the packaged models. Pipeline outputs for a packaged model
go to ``<data>/unit_vis/<model name>``, never into the installed package; readers prefer them.
``settings_local.py`` is read from the current folder, else the repository root (a source
checkout), else the user's config folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "dvis"
_PACKAGE = Path(__file__).resolve().parents[1]  # the dvis package folder


def packaged_data_dir() -> Path:
    """What the package ships: ``dvis/_data`` in a wheel, the repository root in a checkout."""
    inside = _PACKAGE / "_data"
    return inside if inside.is_dir() else _PACKAGE.parent


def packaged_models_dir() -> Path:
    return packaged_data_dir() / "models"


def sample_images_dir() -> Path:
    """The sample images shipped with the package (``input_images/``)."""
    return packaged_data_dir() / "input_images"


def settings_templates_dir() -> Path:
    """The ``settings_local.template-<model>.py`` files shipped with the package."""
    return packaged_data_dir() / "settings"


def user_data_dir() -> Path:
    env = os.environ.get("DVIS_DATA_DIR")
    return Path(env).expanduser() if env else platformdirs.user_data_path(APP)


def user_config_dir() -> Path:
    env = os.environ.get("DVIS_CONFIG_DIR")
    return Path(env).expanduser() if env else platformdirs.user_config_path(APP)


def user_models_dir() -> Path:
    return user_data_dir() / "models"


def model_search_path() -> list[Path]:
    """Folders searched for model folders, in order (resolved, without duplicates)."""
    env = [Path(p).expanduser() for p in os.environ.get("DVIS_MODELS", "").split(os.pathsep) if p]
    dirs: list[Path] = []
    for d in env + [Path.cwd() / "models", user_models_dir(), packaged_models_dir()]:
        if d.resolve() not in dirs:
            dirs.append(d.resolve())
    return dirs


def checkout_root() -> Path | None:
    """The repository root when dvis runs from a source checkout (no ``dvis/_data``), else None."""
    return None if (_PACKAGE / "_data").is_dir() else _PACKAGE.parent


def settings_local_candidates() -> list[Path]:
    """Where ``settings_local.py`` is looked for, in order: the current folder, the repository root
    (a source checkout only, where the templates say to copy it), the user's config folder."""
    dirs = (Path.cwd(), checkout_root(), user_config_dir())
    return [d / "settings_local.py" for d in dict.fromkeys(d.resolve() for d in dirs if d is not None)]


def find_settings_local() -> Path | None:
    """The first existing :func:`settings_local_candidates` entry, or None (the one rule of
    ``run_toolbox.py``, ``dvis toolbox`` and ``dvis serve``)."""
    return next((p for p in settings_local_candidates() if p.is_file()), None)


def is_packaged(folder: str | Path | None) -> bool:
    """Whether ``folder`` lies inside the packaged models (shipped files the pipeline must not touch)."""
    if folder is None:
        return False
    try:
        Path(folder).resolve().relative_to(packaged_models_dir().resolve())
        return True
    except ValueError:
        return False


def user_unit_vis_dir(model_name: str) -> Path:
    """Where the pipeline writes the unit images of a packaged (or folder-less) model."""
    return user_data_dir() / "unit_vis" / model_name


def unit_vis_write_dir(model) -> Path | None:
    """Where the pipeline writes ``model``'s unit images: its own folder, or the user's data folder
    for a packaged model (None for a bare architecture name: the caller needs an explicit folder)."""
    if model.folder is None:
        return None
    return user_unit_vis_dir(model.name) if is_packaged(model.folder) else model.shipped_unit_vis_dir


def unit_vis_read_dirs(name: str, folder: Path | None, shipped: Path | None) -> list[Path]:
    """Unit image folders of a model in order of preference: the user's computed ones (for a
    packaged model) before the shipped ones; only folders that hold a unit_vis manifest."""
    dirs = [user_unit_vis_dir(name)] if is_packaged(folder) else []
    dirs += [shipped] if shipped is not None else []
    return [d for d in dirs if (d / "manifest.json").is_file()]


def unit_vis_origin(model) -> str:
    """Which unit images a model shows, for the toolbox's status and ``dvis vis-info``: 'shipped (PATH)'
    for those that came with the packaged models, 'computed (PATH)' for any other (a user's own model
    folder, or the user's data folder), or 'none'."""
    root = model.unit_vis_dir
    if root is None or not (Path(root) / "manifest.json").is_file():
        return "none"
    kind = "shipped" if is_packaged(root) else "computed"
    return f"{kind} ({root})"


def lookup_report() -> list[tuple[str, Path]]:
    """(what, path) for every place dvis looks things up, in lookup order (``dvis info --paths``)."""
    rows = [("models", d) for d in model_search_path()]
    rows.append(("unit images (computed)", user_data_dir() / "unit_vis"))
    rows += [("settings_local.py", p) for p in settings_local_candidates()]
    rows += [("settings templates", settings_templates_dir()), ("sample images", sample_images_dir())]
    import torch.hub  # torchvision and timm weights live in torch's hub cache

    rows.append(("pretrained weights cache", Path(torch.hub.get_dir())))
    return rows
