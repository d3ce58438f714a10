"""A real JupyterLab for the notebook tests and bench/notebook.py: started with a token on a free
loopback port in a temporary root, every Jupyter and IPython folder of its own (no user config is
read or written), no browser opened, no network asked for."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "dvis-notebook-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` serving ``root`` (a temporary folder) with ``notebooks`` copied into it."""

    def __init__(self, root: Path, notebooks: list[Path], start_timeout_s: float = 180.0):
        self.root = Path(root)
        self.files = self.root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        for nb in notebooks:
            shutil.copy(nb, self.files / Path(nb).name)
        home = self.root / "home"
        self.env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                        JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
                        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
                        JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"), JUPYTER_PLATFORM_DIRS="1")
        # No news fetched, no update check (no network), no notification asking about either.
        notes = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
        notes.mkdir(parents=True, exist_ok=True)
        (notes / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                            "checkForUpdates": False}))
        # Every cell in the page (no windowing): the tests find cells and outputs by selector.
        tracker = home / "lab-settings" / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True, exist_ok=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = open(self.root / "jupyter.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
             "--ServerApp.open_browser=False", f"--ServerApp.root_dir={self.files}",
             f"--IdentityProvider.token={TOKEN}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.news_url=None", "--LabApp.extension_manager=readonly"]
            + (["--allow-root"] if os.geteuid() == 0 else []),  # containers and CI runners run as root
            cwd=self.files, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + start_timeout_s
        while True:  # the server answers once it is up (or the process has died: its log says why)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jupyter lab did not start: {(self.root / 'jupyter.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "api/status", params={"token": TOKEN}, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    def api(self, method: str, path: str, **kwargs):
        r = httpx.request(method, self.url + "api/" + path, headers={"Authorization": f"token {TOKEN}"},
                          timeout=60, **kwargs)
        r.raise_for_status()
        return r.json() if r.content else None

    def notebook_url(self, name: str) -> str:
        return f"{self.url}lab/tree/{name}?token={TOKEN}"

    def kernel_client(self, kernel_id: str):
        """A second client of a running kernel (the notebook keeps its own), by its connection file."""
        from jupyter_client import BlockingKernelClient

        client = BlockingKernelClient(connection_file=str(Path(self.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        client.start_channels()
        client.wait_for_ready(timeout=120)
        return client

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def evaluate(client, expression: str, timeout: float = 120.0):
    """The value of a Python ``expression`` (a literal's repr) in the kernel behind ``client``."""
    import ast

    reply = client.execute_interactive(f"print(repr({expression}))", timeout=timeout, output_hook=_collect(out := []))
    assert reply["content"]["status"] == "ok", reply["content"]
    return ast.literal_eval("".join(out).strip())


def _collect(out: list):
    def hook(msg):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
    return hook


#: Waits in the page: JupyterLab and its kernel may take minutes on a loaded machine; each is an event.
WAIT_MS = 300_000


def open_notebook(browser, lab: JupyterLab, name: str, errors: list | None = None, viewport=(1400, 1000)):
    """A page with notebook ``name`` open and its kernel idle (a cell run before the kernel is
    connected is dropped by JupyterLab without a word). ``errors`` collects the console's errors and
    the page's uncaught exceptions from the start."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.set_default_timeout(WAIT_MS)  # clicks too
    if errors is not None:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(lab.notebook_url(name))
    page.wait_for_function("[...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                           ".some((e) => /\\| Idle$/.test(e.textContent.trim()))")
    return page


def run_cell(page, cell) -> None:
    """Select ``cell`` (a locator; command mode), run it with Shift+Enter, wait for its execution count."""
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("(c) => /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent)",
                           arg=cell.element_handle())
