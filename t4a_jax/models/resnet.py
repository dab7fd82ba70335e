"""Convolutional building blocks shared by the U-Net and the VAE (diffusers names).

Channels-last throughout: images are [N, H, W, C]. Attribute names mirror diffusers'
`ResnetBlock2D`, `Downsample2D` and `Upsample2D` so that weight conversion is a
mechanical key mapping (`tools/convert_weights/core.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from t4a_jax.models.layers import GroupNorm, Linear


class ResnetBlock2D(nnx.Module):
    """GroupNorm -> SiLU -> conv3x3 (+ projected time embedding) -> GroupNorm -> SiLU ->
    conv3x3, plus a (1x1-projected when channels change) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, *, temb_channels: int | None,
                 groups: int = 32, eps: float = 1e-6, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.norm1 = GroupNorm(in_channels, num_groups=groups, epsilon=eps, dtype=dtype,
                               rngs=rngs)
        self.conv1 = nnx.Conv(in_channels, out_channels, (3, 3), padding=((1, 1), (1, 1)),
                              dtype=dtype, rngs=rngs)
        self.time_emb_proj = (Linear(temb_channels, out_channels, dtype=dtype, rngs=rngs)
                              if temb_channels else None)
        self.norm2 = GroupNorm(out_channels, num_groups=groups, epsilon=eps, dtype=dtype,
                               rngs=rngs)
        self.conv2 = nnx.Conv(out_channels, out_channels, (3, 3), padding=((1, 1), (1, 1)),
                              dtype=dtype, rngs=rngs)
        self.conv_shortcut = (nnx.Conv(in_channels, out_channels, (1, 1), dtype=dtype,
                                       rngs=rngs)
                              if in_channels != out_channels else None)

    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        """x [N, H, W, C_in], temb [N, T] (required iff built with temb_channels)."""
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return shortcut + h


class Downsample2D(nnx.Module):
    """Strided 3x3 conv halving H and W. `asymmetric_pad`: pad right/bottom by one and no
    conv padding (the VAE encoder); otherwise pad one on every side (the U-Net)."""

    def __init__(self, channels: int, *, asymmetric_pad: bool = False, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        padding = ((0, 1), (0, 1)) if asymmetric_pad else ((1, 1), (1, 1))
        self.conv = nnx.Conv(channels, channels, (3, 3), strides=(2, 2), padding=padding,
                             dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample2D(nnx.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 conv."""

    def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), padding=((1, 1), (1, 1)),
                             dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)
