"""The Stable Diffusion 1.5 VAE (diffusers `AutoencoderKL`) in Flax NNX, channels-last.

Images are [N, H, W, 3] in [-1, 1]; latents are [N, H/f, W/f, 4] with
f = 2 ** (len(block_out_channels) - 1) (8 for SD1.5: 256x256 images <-> 32x32 latents).
The diffusion model sees *scaled* latents, `scaling_factor * (z - shift_factor)`;
`sample_latents` returns them and `decode` takes them, so callers never handle the
scaling themselves.

Attribute names mirror diffusers (`encoder.down_blocks.0.resnets.0.conv1`,
`encoder.mid_block.attentions.0.to_q`, `decoder.up_blocks.0.upsamplers.0.conv`,
`quant_conv`, ...) so `tools/convert_weights/vae.py` maps checkpoints mechanically.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from t4a_jax.models.attention import attend
from t4a_jax.models.layers import GroupNorm, Linear
from t4a_jax.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from t4a_jax.sharding import annotate

_EPS = 1e-6  # every GroupNorm of the VAE


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Sizes of an `AutoencoderKL` (defaults: SD1.5). Field names follow diffusers'
    `config.json`. `dtype` is the compute dtype; parameters stay float32."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    dtype: Any = jnp.float32

    @classmethod
    def tiny(cls, **overrides) -> "VAEConfig":
        """A test-sized VAE: two levels (downsampling factor 2), one resnet per block."""
        return cls(**{"block_out_channels": (32, 64), "layers_per_block": 1,
                      "norm_num_groups": 8, **overrides})

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


class SpatialSelfAttention(nnx.Module):
    """The VAE mid-block attention (diffusers `Attention` built from the deprecated
    attention block): GroupNorm -> single-head self-attention over the H*W tokens with
    biased q/k/v projections -> output projection, plus the input (residual)."""

    def __init__(self, channels: int, *, groups: int, dtype=jnp.float32, rngs: nnx.Rngs):
        self.group_norm = GroupNorm(channels, num_groups=groups, epsilon=_EPS,
                                    dtype=dtype, rngs=rngs)
        self.to_q = Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_k = Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_v = Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.to_out = nnx.List([Linear(channels, channels, dtype=dtype, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [N, H, W, C] -> [N, H, W, C]."""
        n, h, w, c = x.shape
        tokens = self.group_norm(x).reshape(n, h * w, c)
        out = attend(self.to_q(tokens), self.to_k(tokens), self.to_v(tokens), heads=1)
        return x + self.to_out[0](out).reshape(n, h, w, c)


class UNetMidBlock2D(nnx.Module):
    """resnet -> attention -> resnet at the lowest resolution (no time embedding)."""

    def __init__(self, channels: int, *, groups: int, add_attention: bool = True,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.resnets = nnx.List([
            ResnetBlock2D(channels, channels, temb_channels=None, groups=groups, eps=_EPS,
                          dtype=dtype, rngs=rngs) for _ in range(2)])
        self.attentions = nnx.List(
            [SpatialSelfAttention(channels, groups=groups, dtype=dtype, rngs=rngs)]
            if add_attention else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class DownEncoderBlock2D(nnx.Module):
    """`num_layers` resnets, then (except in the last block) a 2x asymmetric-pad
    downsampling conv."""

    def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, groups: int,
                 add_downsample: bool, dtype=jnp.float32, rngs: nnx.Rngs):
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels,
                          temb_channels=None, groups=groups, eps=_EPS, dtype=dtype, rngs=rngs)
            for i in range(num_layers)])
        self.downsamplers = nnx.List(
            [Downsample2D(out_channels, asymmetric_pad=True, dtype=dtype, rngs=rngs)]
            if add_downsample else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x)
        for downsampler in self.downsamplers:
            x = downsampler(x)
        return x


class UpDecoderBlock2D(nnx.Module):
    """`num_layers` resnets, then (except in the last block) 2x nearest upsampling + conv."""

    def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, groups: int,
                 add_upsample: bool, dtype=jnp.float32, rngs: nnx.Rngs):
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels,
                          temb_channels=None, groups=groups, eps=_EPS, dtype=dtype, rngs=rngs)
            for i in range(num_layers)])
        self.upsamplers = nnx.List(
            [Upsample2D(out_channels, dtype=dtype, rngs=rngs)] if add_upsample else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x)
        for upsampler in self.upsamplers:
            x = upsampler(x)
        return x


class Encoder(nnx.Module):
    """Images [N, H, W, in_channels] -> Gaussian moments [N, H/f, W/f, 2*latent_channels]
    (mean and log-variance concatenated on the channel axis, before `quant_conv`)."""

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs):
        channels, groups, dtype = config.block_out_channels, config.norm_num_groups, config.dtype
        self.conv_in = nnx.Conv(config.in_channels, channels[0], (3, 3),
                                padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)
        self.down_blocks = nnx.List([
            DownEncoderBlock2D(channels[max(i - 1, 0)], channels[i],
                               num_layers=config.layers_per_block, groups=groups,
                               add_downsample=i < len(channels) - 1, dtype=dtype, rngs=rngs)
            for i in range(len(channels))])
        self.mid_block = UNetMidBlock2D(channels[-1], groups=groups,
                                        add_attention=config.mid_block_add_attention,
                                        dtype=dtype, rngs=rngs)
        self.conv_norm_out = GroupNorm(channels[-1], num_groups=groups, epsilon=_EPS,
                                       dtype=dtype, rngs=rngs)
        self.conv_out = nnx.Conv(channels[-1], 2 * config.latent_channels, (3, 3),
                                 padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    """Latents [N, h, w, latent_channels] (after `post_quant_conv`) -> images
    [N, h*f, w*f, out_channels]. `up_blocks[0]` works at the lowest resolution with
    `block_out_channels[-1]` channels; each up block has `layers_per_block + 1` resnets."""

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs):
        channels, groups, dtype = config.block_out_channels, config.norm_num_groups, config.dtype
        reversed_channels = tuple(reversed(channels))
        self.conv_in = nnx.Conv(config.latent_channels, channels[-1], (3, 3),
                                padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)
        self.mid_block = UNetMidBlock2D(channels[-1], groups=groups,
                                        add_attention=config.mid_block_add_attention,
                                        dtype=dtype, rngs=rngs)
        self.up_blocks = nnx.List([
            UpDecoderBlock2D(reversed_channels[max(i - 1, 0)], reversed_channels[i],
                             num_layers=config.layers_per_block + 1, groups=groups,
                             add_upsample=i < len(channels) - 1, dtype=dtype, rngs=rngs)
            for i in range(len(channels))])
        self.conv_norm_out = GroupNorm(channels[0], num_groups=groups, epsilon=_EPS,
                                       dtype=dtype, rngs=rngs)
        self.conv_out = nnx.Conv(channels[0], config.out_channels, (3, 3),
                                 padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
    """The KL-regularised autoencoder: `encode` gives the latent Gaussian,
    `sample_latents` the scaled latents the diffusion model sees, `decode` inverts them."""

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs):
        self.config = config
        latent, dtype = config.latent_channels, config.dtype
        self.encoder = Encoder(config, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)
        self.quant_conv = (nnx.Conv(2 * latent, 2 * latent, (1, 1), dtype=dtype, rngs=rngs)
                           if config.use_quant_conv else None)
        self.post_quant_conv = (nnx.Conv(latent, latent, (1, 1), dtype=dtype, rngs=rngs)
                                if config.use_post_quant_conv else None)
        annotate(self)

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """images [N, H, W, in_channels] in [-1, 1] -> (mean, logvar), each
        [N, H/f, W/f, latent_channels], of the unscaled latent Gaussian (logvar clipped
        to [-30, 20] as in diffusers)."""
        moments = self.encoder(images)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def sample_latents(self, images: jax.Array, key: jax.Array) -> jax.Array:
        """images [N, H, W, in_channels] in [-1, 1] -> scaled latents
        `scaling_factor * (mean + std * eps - shift_factor)`, [N, H/f, W/f, latent_channels]."""
        mean, logvar = self.encode(images)
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        return self.scale(mean + jnp.exp(0.5 * logvar) * eps)

    def scale(self, z: jax.Array) -> jax.Array:
        """Unscaled latents -> the scaled latents the diffusion model sees."""
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def decode(self, latents: jax.Array) -> jax.Array:
        """Scaled latents [N, h, w, latent_channels] -> images [N, h*f, w*f, out_channels]
        (nominally in [-1, 1]; not clipped)."""
        z = latents / self.config.scaling_factor + self.config.shift_factor
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)
