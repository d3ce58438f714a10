"""The screenshots of docs/notebook.md: examples/notebook.ipynb run in a real JupyterLab (tests/helpers/
jupyter.py) in Debian's chromium, the widget clicked and given keys, then each output cell shot.

    python tests/notebook/screenshots.py docs/figures/notebook
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from helpers.jupyter import JupyterLab, open_notebook, run_cell  # noqa: E402 - tests/helpers/jupyter.py

SHOTS = {1: "notebook-widget.png", 2: "notebook-backproject.png", 3: "notebook-unit-card.png",
         4: "notebook-occlusion.png"}  # code cell -> file


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dvis-shots-") as tmp, sync_playwright() as pw:
        lab = JupyterLab(Path(tmp), [REPO / "examples" / "notebook.ipynb"])
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            page = open_notebook(browser, lab, "notebook.ipynb", viewport=(1280, 1000))
            page.wait_for_function("document.querySelectorAll('.jp-Notebook .jp-CodeCell').length == 6")
            code = page.locator(".jp-Notebook .jp-CodeCell")
            for i in range(5):  # all but widget.close()
                run_cell(page, code.nth(i))
            stats = "document.querySelector('.dvis').dvis"
            page.wait_for_function(f"() => {stats} && {stats}.frames > 0 && {stats}.header.settled")
            page.locator(".dvis canvas").click(position={"x": 700, "y": 300})
            for key in ("b", "ArrowRight", "ArrowRight"):
                page.keyboard.press(key)
            page.wait_for_function(f"() => {{ const s = {stats}; return s.ackedSeq >= s.seq && s.header.settled "
                                   "&& s.unsettled.size == 0; }")
            for i, name in SHOTS.items():
                code.nth(i).scroll_into_view_if_needed()
                code.nth(i).screenshot(path=str(out / name))
        finally:
            browser.close()
            lab.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
