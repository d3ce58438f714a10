#!/usr/bin/env python
"""The notebook widget (``dvis.show``) against ``dvis serve``: key-to-frame latency in one run, on the
same machine, in the same chromium.

``dvis serve`` runs in its own process (bench/web.py's ``start_server``); a JupyterLab (tests/helpers/
jupyter.py: temporary root and config, token, loopback) runs a notebook whose one cell opens
``dvis.show`` with the same model, images and settings (global_scale 1.0, as serve's page, not the
notebook's default 0.66). Both pages stay open; the keys alternate between them in blocks, so that
load from elsewhere falls on both alike. Each key is one arrow press with back-projection on and the
default pause_after_key_s, timed by the client itself (the same app.js in both: keydown to the frame
drawn, and to the first settled frame); after each key the driver keeps quiet for 0.25 s before it
polls, as bench/web.py does.

Goal: the widget's key->frame p95 within 1.5 x serve's.

    python bench/notebook.py [--model zf-cifar10] [--keys 40] [--blocks 4]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
from helpers.jupyter import WAIT_MS, JupyterLab, open_notebook, run_cell  # noqa: E402 - tests/helpers/jupyter.py
from web import QUIET_S, pct, ready_page, start_server  # noqa: E402 - bench/web.py


def widget_notebook(folder: Path, model: str) -> Path:
    """A notebook of one cell: the widget of ``model`` with serve's settings."""
    nb = nbformat.v4.new_notebook()
    images = json.dumps(str(REPO / "input_images"))
    nb.cells = [nbformat.v4.new_code_cell(f"import dvis\nw = dvis.show({model!r}, images={images}, global_scale=1.0)\nw")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "bench_widget.ipynb"
    nbformat.write(nb, path)
    return path


def ready_widget(browser, lab: JupyterLab):
    """The notebook's widget running, focused, back-projection on, a unit selected, settled; its
    client's stats object is window.dvis, as on serve's page."""
    page = open_notebook(browser, lab, "bench_widget.ipynb", viewport=(1600, 1000))
    run_cell(page, page.locator(".jp-Notebook .jp-CodeCell").first)
    page.wait_for_function("() => { const r = document.querySelector('.dvis'); return r && r.dvis && r.dvis.frames > 0; }")
    page.evaluate("window.dvis = document.querySelector('.dvis').dvis")
    page.locator(".dvis canvas").click(position={"x": 5, "y": 5})  # the focus (a click: input 1)
    for key in ("b", "ArrowDown"):
        page.keyboard.press(key)
    page.wait_for_function("dvis.ackedSeq >= 3 && dvis.header.settled && dvis.unsettled.size == 0")
    return page


def press_keys(page, keys: int, first: int) -> None:
    """``keys`` single arrow presses, each timed by the page (see bench/web.py's latency)."""
    done = page.evaluate("dvis.results.length + dvis.unchanged.length")
    for i in range(keys):
        page.keyboard.press("ArrowRight" if (first + i) % 2 == 0 else "ArrowLeft")
        time.sleep(QUIET_S)  # the driver's polling would share the cores with the key being timed
        page.wait_for_function(f"dvis.results.length + dvis.unchanged.length >= {done + i + 1}", timeout=WAIT_MS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="zf-cifar10")
    p.add_argument("--keys", type=int, default=40, help="single key presses on each of the two")
    p.add_argument("--blocks", type=int, default=4, help="the keys alternate between the two in this many blocks")
    args = p.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("bench/notebook.py needs Debian's chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="dvis-bench-notebook-") as tmp, sync_playwright() as pw:
        tmp = Path(tmp)
        (tmp / "nb").mkdir()
        lab = JupyterLab(tmp / "lab", [widget_notebook(tmp / "nb", args.model)])
        proc, url = start_server(args.model, "jpeg")
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            pages = {"serve": ready_page(browser, url), "widget": ready_widget(browser, lab)}
            for page in pages.values():
                page.evaluate("dvis.latencies.length = 0; dvis.results.length = 0")
            per_block = max(1, args.keys // args.blocks)
            for b in range(args.blocks):
                for name in (("serve", "widget") if b % 2 == 0 else ("widget", "serve")):
                    press_keys(pages[name], per_block, b * per_block)
            stats = {name: {"first": page.evaluate("dvis.latencies"), "results": page.evaluate("dvis.results"),
                            "errors": page.evaluate("dvis.errors")} for name, page in pages.items()}
        finally:
            browser.close()
            proc.terminate()
            proc.wait(timeout=30)
            lab.stop()
    serve, widget = stats["serve"], stats["widget"]
    goal = 1.5 * pct(serve["first"], 95)
    print(f"{args.model}: {len(widget['first'])} keys each, in {args.blocks} alternating blocks   (p50 / p95 ms)")
    print(f"{'':<8} {'key->frame':>16} {'key->result':>16}")
    for name, s in stats.items():
        print(f"{name:<8} {pct(s['first'], 50):7.1f} /{pct(s['first'], 95):7.1f} "
              f"{pct(s['results'], 50):7.1f} /{pct(s['results'], 95):7.1f}" + (f"   errors: {s['errors']}" if s["errors"] else ""))
    ok = "ok" if pct(widget["first"], 95) <= goal else "MISSED"
    print(f"goal: widget key->frame p95 <= 1.5 x serve's = {goal:.1f} ms: {ok} "
          f"({pct(widget['first'], 95) / pct(serve['first'], 95):.2f} x)")


if __name__ == "__main__":
    main()
