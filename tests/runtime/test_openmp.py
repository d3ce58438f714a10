"""The dvis command's OpenMP spin-wait (dvis.runtime.openmp) and the package's lazy exports it relies on."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from dvis.runtime.openmp import SPIN_COUNT, USER_SETTINGS


def run_python(code: str, **env_changes: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_dvis_does_not_load_torch_and_exports_stay_functions():
    out = run_python("""
        import sys, types
        import dvis
        assert "torch" not in sys.modules, "import dvis loaded torch"
        import dvis.engine.backproject, dvis.pipeline.precompute, dvis.engine.receptive_field  # modules of exports
        from dvis import activations, track_maxes
        from dvis.formats import paths
        for f in (dvis.backproject, dvis.precompute, dvis.receptive_field, activations, track_maxes):
            assert callable(f) and not isinstance(f, types.ModuleType), f
        assert isinstance(paths, types.ModuleType)
        assert set(dvis.__all__) <= set(dir(dvis))
        try:
            dvis.no_such_name
        except AttributeError as e:
            print(e)
    """)
    assert out == "module 'dvis' has no attribute 'no_such_name'"


def test_rules_for_setting_the_spin_count():
    code = """
        import os
        {before}
        from dvis.runtime.openmp import shorten_spin_wait
        print(shorten_spin_wait(), os.environ.get("GOMP_SPINCOUNT"), os.environ.get("OMP_WAIT_POLICY"))
    """
    assert run_python(code.format(before="")) == f"True {SPIN_COUNT} None"
    assert run_python(code.format(before=""), OMP_WAIT_POLICY="PASSIVE") == "False None PASSIVE"  # the user's choice
    assert run_python(code.format(before=""), GOMP_SPINCOUNT="77") == "False 77 None"
    assert run_python(code.format(before="import torch")) == "False None None"  # too late: libgomp has read it


SPIN_PROBE = """
    import sys, time
    {setup}
    import torch
    torch.set_num_threads(2)
    x = torch.randn(2000, 2000)
    cpu = []
    for _ in range(20):
        x.mul(2.0)  # a parallel region; then the pool's second thread waits
        t = time.process_time()
        time.sleep(0.05)
        cpu.append((time.process_time() - t) * 1000)
    cpu.sort()
    print(cpu[len(cpu) // 2], cpu[-1])
"""


def test_the_dvis_command_shortens_the_idle_threads_spin():
    """CPU time the process burns while its main thread sleeps after a parallel operation: libgomp's
    default spins for milliseconds; in a process that started as the dvis command, next to nothing."""
    if not sys.platform.startswith("linux"):
        pytest.fail("GOMP_SPINCOUNT is a GNU OpenMP setting; this test runs on Linux")
    default_median, default_max = map(float, run_python(SPIN_PROBE.format(setup="")).split())
    dvis_median, _ = map(float, run_python(SPIN_PROBE.format(setup="import dvis.cli")).split())
    assert default_max > 2.0, f"control: libgomp's default spin should show ({default_median:.2f}/{default_max:.2f} ms)"
    assert dvis_median < 1.0, f"dvis process spun {dvis_median:.2f} ms per 50 ms idle (default {default_median:.2f})"
