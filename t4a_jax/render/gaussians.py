"""The static 3D Gaussian asset as a pytree of raw (optimisable) parameters.

Conventions (those of the INRIA 3DGS `.ply` layout, so reading and writing is a copy):

- `means`           [N, 3]  world positions.
- `quats`           [N, 4]  rotations as quaternions (w, x, y, z), not necessarily unit.
- `log_scales`      [N, 3]  natural log of the per-axis standard deviations.
- `opacity_logits`  [N]     logit of the opacity.
- `sh`              [N, K, 3] spherical-harmonic colour coefficients, K = (degree + 1)^2;
                    `sh[:, 0]` is the DC term (`f_dc`), colour = SH(dir) + 0.5.

`activated()` gives what `t4a_jax.render.rasterize` takes: unit-free scales and
opacities in (0, 1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from t4a_jax.render.sh import SH_C0


@struct.dataclass
class Gaussians:
    """A set of N 3D Gaussians with SH colours; see the module docstring for units."""

    means: jax.Array
    quats: jax.Array
    log_scales: jax.Array
    opacity_logits: jax.Array
    sh: jax.Array

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(math.isqrt(self.sh.shape[1])) - 1

    @property
    def scales(self) -> jax.Array:
        return jnp.exp(self.log_scales)

    @property
    def opacities(self) -> jax.Array:
        return jax.nn.sigmoid(self.opacity_logits)

    def activated(self) -> dict[str, jax.Array]:
        """The keyword arguments `rasterize` takes for these Gaussians (colours as SH)."""
        return dict(means=self.means, quats=self.quats, scales=self.scales,
                    opacities=self.opacities, colors=self.sh)


def sh_from_rgb(rgb: jax.Array, sh_degree: int = 0) -> jax.Array:
    """SH coefficients [N, (d+1)^2, 3] whose view-independent colour is `rgb` [N, 3].

    The DC term is `(rgb - 0.5) / SH_C0`; higher bands are zero.
    """
    rgb = jnp.asarray(rgb)
    dc = (rgb - 0.5) / SH_C0
    rest = jnp.zeros((rgb.shape[0], (sh_degree + 1) ** 2 - 1, 3), dc.dtype)
    return jnp.concatenate([dc[:, None, :], rest], axis=1)


def rgb_from_sh_dc(sh: jax.Array) -> jax.Array:
    """The view-independent colour [N, 3] of SH coefficients [N, K, 3]."""
    return sh[:, 0, :] * SH_C0 + 0.5


def logit(p: jax.Array) -> jax.Array:
    """Inverse of the sigmoid, for opacities in (0, 1)."""
    p = jnp.asarray(p)
    return jnp.log(p) - jnp.log1p(-p)
