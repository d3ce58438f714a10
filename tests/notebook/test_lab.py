"""The example notebook in JupyterLab: its cells run, the widget answers keys (and only it: the
notebook's own shortcuts stay quiet), an upload and the browser's camera reach it, a unit card's
images load, and closing the widget, then restarting the kernel, leaves no dvis thread or hook
behind."""
from __future__ import annotations

import os
import time

import numpy as np
from PIL import Image

from helpers.jupyter import evaluate, open_notebook, run_cell

WIDGET = "document.querySelector('.dvis')"
FRAMES = f"() => {{ const r = {WIDGET}; return r && r.dvis && r.dvis.frames > 0 && r.dvis.header.settled; }}"


def canvas_png(page) -> str:
    return page.evaluate(f"{WIDGET}.querySelector('canvas').toDataURL('image/png')")


def test_example_notebook_in_jupyterlab(lab, browser, tmp_path):
    errors: list[str] = []  # the browser console's errors and the page's uncaught exceptions
    page = open_notebook(browser, lab, "notebook.ipynb", errors)
    page.wait_for_function("document.querySelectorAll('.jp-Notebook .jp-CodeCell').length == 6")
    code = page.locator(".jp-Notebook .jp-CodeCell")
    n_code = code.count()
    # Every cell but the last (widget.close()), one at a time: each waits for its result.
    for i in range(n_code - 1):
        run_cell(page, code.nth(i))
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    assert not stderr, stderr
    page.wait_for_function(FRAMES)

    # Keys reach the toolbox while it has the focus, and not the notebook ("b" would add a cell).
    cells = page.locator(".jp-Notebook .jp-Cell").count()
    page.locator(".dvis canvas").click(position={"x": 5, "y": 5})
    seq = page.evaluate(f"{WIDGET}.dvis.seq")
    page.wait_for_function(f"() => {WIDGET}.dvis.ackedSeq >= {seq}")
    before = canvas_png(page)
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "b"):
        page.keyboard.press(key)
    page.wait_for_function(f"() => {{ const s = {WIDGET}.dvis; return s.seq == {seq + 4} && s.ackedSeq >= {seq + 4} "
                           f"&& s.header.settled; }}")
    assert canvas_png(page) != before
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells
    assert page.evaluate(f"{WIDGET}.dvis.errors") == []

    # The unit card's images (embedded) all decode.
    card = page.locator(".dvis-card img")
    assert card.count() >= 3
    page.wait_for_function("() => [...document.querySelectorAll('.dvis-card img')]"
                           ".every((i) => i.complete && i.naturalWidth > 0)")
    assert page.locator(".dvis-image img, .jp-RenderedImage img").count() >= 2  # back-projection, occlusion

    kernel = lab.api("GET", "kernels")[0]
    client = lab.kernel_client(kernel["id"])
    try:
        # An image chosen with the widget's file button goes over the comm and is shown.
        img = tmp_path / "red.png"
        Image.fromarray(np.full((50, 70, 3), (200, 30, 30), np.uint8)).save(img)
        page.locator(".dvis .dvis-file").set_input_files(str(img))
        page.wait_for_function(f"() => {WIDGET}.querySelector('.dvis-note').textContent.startsWith('showing')")
        assert evaluate(client, "widget.toolbox.files.paths[-1]") == "upload:red.png"

        # The browser's (fake) camera: its frames reach the toolbox over the comm; "c" again stops it.
        page.locator(".dvis canvas").click(position={"x": 5, "y": 5})
        page.keyboard.press("c")
        page.wait_for_function(f"() => {WIDGET}.querySelector('.dvis-note').textContent == 'camera on'")
        deadline = time.monotonic() + 300
        while evaluate(client, "(widget.toolbox.frame_id or ('',))[0]") != "camera":
            assert time.monotonic() < deadline, evaluate(client, "widget.toolbox.message")
            page.wait_for_timeout(100)  # each look is a request to the kernel: spaced out
        page.keyboard.press("c")
        seq = page.evaluate(f"{WIDGET}.dvis.seq")
        page.wait_for_function(f"() => {WIDGET}.dvis.ackedSeq >= {seq}")
        assert evaluate(client, "widget.toolbox.state.camera") is False

        # The kernel's threads: the toolbox's while the widget is open, none once it is closed.
        pid = evaluate(client, "__import__('os').getpid()")
        names = evaluate(client, "sorted(t.name for t in __import__('threading').enumerate())")
        assert any(n.startswith("dvis-") for n in names), names
        run_cell(page, code.nth(n_code - 1))
        names = evaluate(client, "sorted(t.name for t in __import__('threading').enumerate())")
        assert not [n for n in names if n.startswith("dvis")], names
        hooks = evaluate(client, "sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) "
                                 "for m in model.net.modules())")
        assert hooks == 0
        lab.api("POST", f"kernels/{kernel['id']}/restart")
        client.wait_for_ready(timeout=120)
        assert not os.path.exists(f"/proc/{pid}")  # the old kernel is gone, and its threads with it
        names = evaluate(client, "sorted(t.name for t in __import__('threading').enumerate())")
        assert not [n for n in names if n.startswith("dvis")], names
    finally:
        client.stop_channels()
    assert not errors, errors
    page.close()
