"""Test setup: make the helper modules in tests/ importable and keep JAX on the CPU."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
