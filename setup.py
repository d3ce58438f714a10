"""Build hook: the wheel ships the default model, the other model folders, the sample images and
the settings templates as package data under ``dvis/_data/``.

A checkout keeps them at the top level (``models/``, ``input_images/``, ``settings/``), where the
tests, docs and scripts use them; :mod:`dvis.formats.paths` finds either layout. Everything else is
configured in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("models", "input_images", "settings")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.tmp*")


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout itself
            return
        data = Path(self.build_lib) / "dvis" / "_data"
        for name in SHIPPED:
            shutil.rmtree(data / name, ignore_errors=True)
            shutil.copytree(ROOT / name, data / name, ignore=IGNORE)


setup(cmdclass={"build_py": BuildPyWithData})
