#!/usr/bin/env python
"""Open the dvis toolbox window: ``python run_toolbox.py [--model NAME] [--images DIR] [--headless ...]``.

Settings come from dvis/toolbox/settings.py, then settings_local.py, then the flags; see docs/toolbox.md.
"""
import sys
from pathlib import Path

from dvis.commands.apps import main

if __name__ == "__main__":
    sys.exit(main(repo_root=Path(__file__).resolve().parent))
