"""Run a test script in a fresh Python process that sees N fake CPU devices.

XLA reads `--xla_force_host_platform_device_count` once, when JAX starts, so tests of
sharded code run their body in a subprocess: `run_on_devices(script)` fails the calling
test with the script's output when it exits non-zero (an assertion error in the script
is a test failure), and returns its stdout otherwise.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_on_devices(script: str, devices: int = 8, timeout: float = 600) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"),
                                           os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"script on {devices} devices failed (exit {result.returncode})"
                             f"\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result.stdout
