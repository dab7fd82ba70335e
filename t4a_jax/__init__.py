"""t4a_jax: Track4Animate3D in JAX/Flax.

Layered packages (low ones never import high ones; tests/test_layering.py checks it):
- leaves: `render` (cameras, SH, the differentiable tile rasterizer, Gaussian assets and
  their I/O, the one view renderer, projection and visibility), `diffusion` (schedules
  and samplers over arrays), `tracking` (query points, descriptors, L_corr, L_pos);
- `models` (U-Net, VAE, CLIP towers, the model bundle), `data` (MV-Video reader,
  synthetic 4D objects, track caches, loader);
- `pipeline` (a static asset -> a multi-view video), `training` (Stage One objective,
  state, step, checkpoints), `evaluation` (TAP-Vid metrics, the tracking probe);
- commands over `run(config)`: `train`, `sample`, `turntable`.
Utilities: `sharding`, `video`, `atomic`, `config_files`. Importing the package never
imports torch; it does set an XLA flag against a CPU miscompilation (`xla_workarounds`).
"""

from t4a_jax import xla_workarounds as _xla_workarounds

_xla_workarounds.apply()

__version__ = "0.1.0"
