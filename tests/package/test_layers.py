"""The package's layering (pyproject.toml's import-linter contracts): which package may import which,
and no import cycle between the modules of any package."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: ``lint-imports --no-cache --config CONFIG`` (import-linter's command, run from the config's folder).
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"


def lint(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LINT, str(config)], cwd=config.parent, capture_output=True,
                          text=True, timeout=300)


def test_dvis_keeps_its_layers_and_has_no_import_cycle():
    out = lint(REPO / "pyproject.toml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_contracts_catch_a_breach_and_a_cycle(tmp_path):
    # The same contract types on a tiny package: an upward import and a cycle are both reported.
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("import toy.high\n")
    (pkg / "high.py").write_text("import toy.low\n")
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "toy"\n'
                      '[[tool.importlinter.contracts]]\nname = "layers"\ntype = "layers"\nlayers = ["toy.high", "toy.low"]\n')
    assert lint(config).returncode == 1
    (pkg / "low.py").write_text("")
    assert lint(config).returncode == 0
    config.write_text('[tool.importlinter]\nroot_package = "toy"\n'
                      '[[tool.importlinter.contracts]]\nname = "acyclic"\ntype = "acyclic_siblings"\nancestors = ["toy"]\n')
    (pkg / "low.py").write_text("import toy.high\n")
    out = lint(config)
    assert out.returncode == 1 and "No cycles are allowed in toy" in out.stdout
