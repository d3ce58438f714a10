"""Every torchvision classifier (and any timm:NAME) through dvis: load, geometry, back-projection, toolbox.

    python bench/zoo.py [--models all|small|NAME...] [--device cpu|cuda] [--mem-gb 12] [--json FILE]

Each model runs at random init and its default input size in a fresh subprocess with an address-space
cap (``RLIMIT_AS``; none on CUDA, whose driver reserves huge virtual ranges). Per model it prints one
table row:

* ``GF``: GFLOPs of one forward (counted on fake tensors, no compute); resnet50 is 8.2;
* ``load s``: ``load_model``; ``fwd ms``: one plain forward (no grad, batch 1);
* ``geom s``: :func:`dvis.engine.geometry.model_geometry`, all layers;
* ``1st s``: headless toolbox from construction to the first rendered frame;
* ``b ms``: ms per toolbox frame with back-projection on (next image, forward + backward + render);
* ``deconv/guided/grad ms``: :func:`dvis.engine.backproject.backproject` of unit 0 at its max on the middle layer;
* ``rf e/g/f``: layers with an exact local field / flagged global context / no field (failed);
* ``RSS MB``: peak RSS, and ``x``: peak over the peak of plain inference (load + one forward);
* ``load``: the machine's 1-minute load average when the model finished (timings on a shared machine).

Goals on 2 cores (issue 9): every model starts and back-projects in all modes with 0 failed fields;
first frame <= 10 s for resnet50-sized models (<= 1.5x its GFLOPs) and <= 3 forwards + 2 s for any
model; peak RSS <= 2x plain inference. The totals line counts each goal. Run the long sweep niced
(``nice -n 10``) on shared machines.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

RESULT = "ZOO-RESULT "
#: The CI subset (tests/models/test_zoo.py) and the default of --models small.
SMALL = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "googlenet", "densenet121",
         "regnet_y_400mf", "vit_b_16", "swin_t"]
RESNET50_GFLOPS = 8.18
MODES = ("deconv", "guided", "grad")


# ---------------------------------------------------------------------------- one model (subprocess)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gflops(net, channels: int, size: tuple[int, int], device) -> float | None:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    import torch

    counter = FlopCounterMode(display=False)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), counter, torch.no_grad():
            net(torch.empty((1, channels) + tuple(size), device=device))
    except Exception:  # noqa: BLE001 - a model fake tensors cannot run just has no count
        return None
    return counter.get_total_flops() / 1e9


def _field_counts(geometry: dict, layers: list[str]) -> dict:
    exact = context = failed = skipped = 0
    for layer in layers:
        g = geometry.get(layer)
        if g is None or not g.runs:
            skipped += 1
        elif g.rf is None:
            failed += 1
        elif g.global_context:
            context += 1
        else:
            exact += 1
    return {"rf_exact": exact, "rf_global": context, "rf_failed": failed, "not_run": skipped}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images(folder: Path, n: int = 4) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (320, 300, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def run_one(name: str, device: str, frames: int) -> dict:
    """All measurements of one model; a failing stage records its error and the rest still run."""
    import torch

    from dvis.engine.backproject import backproject
    import dvis.engine.geometry.tracer
    from dvis.engine.geometry import model_geometry
    from dvis.models.loading import load_model
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.settings import load_settings

    row: dict = {"model": name, "errors": {}}

    def stage(key: str, fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the row reports it
            row["errors"][key] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            traceback.print_exc()
            return None

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(name, device, weights="none")
    row["load_s"] = time.perf_counter() - t
    dev = model.device
    row["input"] = list(model.input_size)
    row["layers"] = len(model.layers)
    row["params_m"] = sum(p.numel() for p in model.net.parameters()) / 1e6
    row["gflops"] = _gflops(model.net, model.channels, model.input_size, dev)
    x = torch.randn((1, model.channels) + tuple(model.input_size), device=dev)

    def forward() -> float:
        times = []
        for _ in range(2):  # the first is cold (allocations, kernel selection)
            _sync(dev)
            t = time.perf_counter()
            with torch.no_grad():
                model.net(x)
            _sync(dev)
            times.append(time.perf_counter() - t)
            if times[-1] > 10:  # one is enough for the slowest
                break
        return min(times) * 1000

    row["fwd_ms"] = stage("forward", forward)
    row["plain_rss_mb"] = _peak_mb()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, {"images": str(_images(Path(tmp))), "pause_after_key_s": 0.0,
                                        "screenshot_dir": tmp})

        def first_frame():
            t = time.perf_counter()
            tb = Toolbox(model, settings, headless=True)
            tb.settle()
            tb.render()
            row["first_frame_s"] = time.perf_counter() - t
            return tb

        def geometry():
            dvis.engine.geometry.tracer._cache.pop(model.net, None)  # load_model may have traced it already
            t = time.perf_counter()
            geo = model_geometry(model)
            row["geom_s"] = time.perf_counter() - t
            row.update(_field_counts(geo, model.layers))
            return geo

        geo = stage("geometry", geometry) or {}
        dvis.engine.geometry.tracer._cache.pop(model.net, None)  # the toolbox pays for a cold geometry, as a user does
        tb = stage("toolbox", first_frame)
        runnable = [layer for layer in model.layers if layer in geo and geo[layer].runs] or list(model.layers)
        middle = runnable[len(runnable) // 2]
        row["middle"] = middle

        def back(mode: str):
            _sync(dev)
            t = time.perf_counter()
            grad = backproject(model, x, middle, 0, mode=mode, at="max")
            _sync(dev)
            ms = (time.perf_counter() - t) * 1000
            if grad.shape != x.shape or not bool(torch.isfinite(grad).all()):
                raise RuntimeError(f"bad back-projection: shape {tuple(grad.shape)}, finite {bool(torch.isfinite(grad).all())}")
            return ms

        for mode in MODES:
            row[f"{mode}_ms"] = stage(mode, lambda: back(mode))

        if tb is not None:
            def back_frames():
                for key in ["b"] + ["e"] * frames:
                    t = time.perf_counter()
                    tb.press(key)
                    tb.settle()
                    tb.render()
                    elapsed = time.perf_counter() - t
                out = tb.worker.output
                if out is None or out.error or out.grad is None:
                    raise RuntimeError(f"no back-projection in the toolbox: {getattr(out, 'error', None)}")
                return elapsed * 1000  # the last frame: warm

            row["back_frame_ms"] = stage("toolbox_back", back_frames)
            if tb.message and tb.message.startswith("worker:"):
                row["errors"]["toolbox_msg"] = tb.message
            tb.close()
    row["peak_rss_mb"] = _peak_mb()
    return row


def worker_main(name: str, device: str, frames: int, threads: int) -> int:
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        row = run_one(name, device, frames)
    except Exception as exc:  # noqa: BLE001 - e.g. the model does not load
        traceback.print_exc()
        row = {"model": name, "errors": {"load": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}}
    print(RESULT + json.dumps(row), flush=True)
    return 0


# ---------------------------------------------------------------------------- the sweep (parent)

COLUMNS = [
    ("model", "model", "{}"), ("input", "input", "{}"), ("layers", "layers", "{}"), ("gflops", "GF", "{:.1f}"),
    ("load_s", "load s", "{:.1f}"), ("fwd_ms", "fwd ms", "{:.0f}"), ("geom_s", "geom s", "{:.2f}"),
    ("first_frame_s", "1st s", "{:.1f}"), ("back_frame_ms", "b ms", "{:.0f}"), ("deconv_ms", "deconv ms", "{:.0f}"),
    ("guided_ms", "guided ms", "{:.0f}"), ("grad_ms", "grad ms", "{:.0f}"), ("rf", "rf e/g/f", "{}"),
    ("peak_rss_mb", "RSS MB", "{:.0f}"), ("rss_ratio", "x", "{:.2f}"), ("load_avg", "load", "{:.0f}"),
    ("status", "status", "{}"),
]


def goals(row: dict) -> dict:
    """Which of the issue's goals a row meets (None where it cannot be judged)."""
    errors = row.get("errors", {})
    started = "first_frame_s" in row and "toolbox" not in errors
    backs = all(f"{m}_ms" in row and row[f"{m}_ms"] is not None for m in MODES) and "toolbox_back" not in errors
    first, fwd = row.get("first_frame_s"), row.get("fwd_ms")
    sized = row.get("gflops") is not None and row["gflops"] <= 1.5 * RESNET50_GFLOPS
    return {
        "started": started,
        "backprojects": backs,
        "fields_ok": row.get("rf_failed") == 0 and "geometry" not in errors,
        "first_3fwd": None if first is None or fwd is None else first <= 3 * fwd / 1000 + 2,
        "first_10s": None if first is None or not sized else first <= 10,
        "rss_2x": None if "rss_ratio" not in row else row["rss_ratio"] <= 2,
    }


def _cell(row: dict, key: str, fmt: str) -> str:
    if key == "input":
        return "x".join(map(str, row["input"])) if "input" in row else "-"
    if key == "rf":
        return "/".join(str(row.get(k, "-")) for k in ("rf_exact", "rf_global", "rf_failed"))
    if key == "status":
        errors = row.get("errors", {})
        return "ok" if not errors else "; ".join(f"{k}: {v}" for k, v in errors.items()).replace("|", "/")
    value = row.get(key)
    return "-" if value is None else fmt.format(value)


def table_header() -> str:
    return "| " + " | ".join(title for _, title, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def table_row(row: dict) -> str:
    return "| " + " | ".join(_cell(row, key, fmt) for key, _, fmt in COLUMNS) + " |"


def totals(rows: list[dict]) -> str:
    n = len(rows)
    marks = [goals(r) for r in rows]

    def count(key: str) -> str:
        judged = [m[key] for m in marks if m[key] is not None]
        return f"{sum(judged)}/{len(judged)}"

    failed_fields = sum(r.get("rf_failed", 0) for r in rows)
    exact = sum(r.get("rf_exact", 0) for r in rows)
    context = sum(r.get("rf_global", 0) for r in rows)
    slowest = sorted((r for r in rows if r.get("first_frame_s") is not None), key=lambda r: -r["first_frame_s"])[:5]
    lines = [
        f"models: {n}; started: {count('started')}; back-project in all modes: {count('backprojects')}; "
        f"0 failed fields: {count('fields_ok')}",
        f"fields over all layers: {exact} exact, {context} global context, {failed_fields} failed",
        f"first frame <= 3 forwards + 2 s: {count('first_3fwd')}; <= 10 s (resnet50-sized, "
        f"<= {1.5 * RESNET50_GFLOPS:.1f} GFLOPs): {count('first_10s')}; peak RSS <= 2x plain: {count('rss_2x')}",
        "slowest first frames: " + ", ".join(f"{r['model']} {r['first_frame_s']:.1f} s" for r in slowest),
        "failed stages: " + (", ".join(r["model"] for r in rows if r.get("errors")) or "none")
        + "; failed fields: " + (", ".join(f"{r['model']} ({r['rf_failed']})" for r in rows if r.get("rf_failed"))
                                 or "none"),
    ]
    return "\n".join(lines)


def model_names(spec: list[str]) -> list[str]:
    import torchvision.models as tvm

    if spec == ["all"]:
        # cheapest first (torchvision's GFLOPs of the default weights), so a sweep cut short has covered most
        names = tvm.list_models(module=tvm)
        return sorted(names, key=lambda n: tvm.get_model_weights(n).DEFAULT.meta.get("_ops", 0.0))
    if spec == ["small"]:
        return list(SMALL)
    return spec


def _cap(mem_gb: float):
    def limit() -> None:
        cap = int(mem_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return limit


def run_sweep(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    log_dir = Path(args.logs) if args.logs else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    print(table_header(), flush=True)
    for name in model_names(args.models):
        cmd = [sys.executable, __file__, "--worker", name, "--device", args.device, "--frames", str(args.frames),
               "--threads", str(args.threads)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  preexec_fn=None if args.device.startswith("cuda") else _cap(args.mem_gb))
            lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
            if lines:
                row = json.loads(lines[-1][len(RESULT):])
            else:
                last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                row = {"model": name, "errors": {"process": f"exit {proc.returncode}: {last}"}}
            stderr = proc.stderr
        except subprocess.TimeoutExpired as exc:
            row = {"model": name, "errors": {"process": f"timed out after {args.timeout:.0f} s"}}
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        row["wall_s"] = time.perf_counter() - start
        row["load_avg"] = os.getloadavg()[0]  # timings on a shared machine need this beside them
        if row.get("peak_rss_mb") and row.get("plain_rss_mb"):
            row["rss_ratio"] = row["peak_rss_mb"] / row["plain_rss_mb"]
        if log_dir:
            (log_dir / f"{name.replace(':', '_')}.log").write_text(stderr)
        rows.append(row)
        print(table_row(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print()
    print(totals(rows), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["all"], help="all, small, or model names (torchvision or timm:NAME)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--mem-gb", type=float, default=12.0, help="address-space cap per model process (CPU only)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per model")
    p.add_argument("--frames", type=int, default=2, help="toolbox frames with back-projection on (after the first)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", help="write the rows as JSON here (after every model)")
    p.add_argument("--logs", help="folder for each model's stderr")
    p.add_argument("--report", metavar="JSON", help="print the table and totals of a --json file and exit")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.device, args.frames, args.threads)
    if args.report:
        rows = json.loads(Path(args.report).read_text())
        print("\n".join([table_header()] + [table_row(r) for r in rows]) + "\n\n" + totals(rows))
        return 0
    run_sweep(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
