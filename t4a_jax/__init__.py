"""t4a_jax: Track4Animate3D in JAX/Flax.

Subpackages: `render` (cameras, spherical harmonics, the differentiable tile rasterizer,
Gaussian assets and their I/O), `models` (U-Net, VAE, CLIP towers), `diffusion`
(schedules, DDIM, the Stage One pipeline), `tracking` (queries, tracking losses,
metrics, the probe), `data` (MV-Video reader, synthetic 4D objects, track caches,
loader), `sharding`. Importing the package never imports torch; it does set an XLA flag
against a CPU miscompilation (`xla_workarounds`).
"""

from t4a_jax import xla_workarounds as _xla_workarounds

_xla_workarounds.apply()

__version__ = "0.1.0"
