"""t4a_jax: Track4Animate3D in JAX/Flax.

Subpackages: `t4a_jax.render` (cameras, spherical harmonics, the differentiable tile
rasterizer, Gaussian assets and their I/O). Importing the package never imports torch.
"""

__version__ = "0.1.0"
