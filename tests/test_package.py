"""Package-level guarantees: importing the library never imports torch."""

import subprocess
import sys


def test_import_never_pulls_in_torch():
    modules = ["t4a_jax", "t4a_jax.models", "t4a_jax.render", "t4a_jax.render.ply", "t4a_jax.render.mesh",
               "t4a_jax.render.builtin", "t4a_jax.video", "t4a_jax.turntable"]
    code = ("import sys\n"
            + "".join(f"import {m}\n" for m in modules)
            + "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            + "print(len(bad)); assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
