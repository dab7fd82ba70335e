"""Set XLA's CPU options before JAX starts: one against a miscompilation that gives
silently wrong results, one for speed.

jaxlib 0.10.x: XLA's CPU backend offloads fused reductions to YNNPACK and then
miscomputes some of them. A reduction divided by another reduction of a broadcast
operand, such as a cosine similarity of feature maps against descriptors,

    x [2, 4096, 3], y [16, 1, 3]:  jnp.sum(x[:, None] * y, -1) / jnp.sum(x * x, -1)[:, None]

is off by up to ~40 under `jax.jit` (exact in eager mode and with the flag below); small
arrays are unaffected, so tiny tests can miss it. Its convolutions also go to YNNPACK,
which computes a filter gradient as a large-window convolution plus transposes, about 3x
slower than XLA's own (Eigen) convolution; routing them back makes the tiny U-Net's
forward 8 % and forward + backward 5 % faster (`benchmarks/unet.py`).

`apply()` adds `FLAG` (`--xla_cpu_experimental_ynn_fusion_type=-reduce,
-individual_convolution`: no YNNPACK reduce fusions, no YNNPACK convolutions; dots stay
on YNNPACK) to `XLA_FLAGS` unless the user set that option. It runs when `t4a_jax` is
imported and only takes effect if no JAX backend is initialised yet, so import t4a_jax
before running JAX computations; `tests/test_xla_workarounds.py` checks the case above
(and that it still fails without the flag, so a jaxlib that fixes it is noticed).
"""

from __future__ import annotations

import os
import sys
import warnings

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce,-individual_convolution"
_AFFECTED_JAXLIB = ((0, 10),)       # (major, minor) releases known to need the flag


def apply() -> None:
    """Add the flag to XLA_FLAGS for affected jaxlib versions (see the module docstring)."""
    try:
        from importlib.metadata import version
        release = tuple(int(p) for p in version("jaxlib").split(".")[:2])
    except Exception:           # jaxlib missing or an unusual version string: leave XLA be
        return
    if release not in _AFFECTED_JAXLIB:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return
    if _backends_started():
        warnings.warn(f"t4a_jax was imported after JAX started its backends, so it could not "
                      f"set XLA_FLAGS={FLAG!r}, which avoids wrong results from jaxlib "
                      f"{'.'.join(map(str, release))} on CPU; import t4a_jax first or set it "
                      f"yourself", RuntimeWarning, stacklevel=3)
        return
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()


def _backends_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(bridge is not None and getattr(bridge, "_backends", None))
