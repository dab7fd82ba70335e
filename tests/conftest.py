"""Test setup: make the helper modules in tests/ importable and keep JAX on the CPU."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Before any JAX computation: t4a_jax sets XLA flags against a CPU miscompilation
# (t4a_jax/xla_workarounds.py).
import t4a_jax  # noqa: E402,F401
