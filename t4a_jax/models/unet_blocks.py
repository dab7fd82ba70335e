"""The stages of the U-Net (diffusers `CrossAttnDownBlock2D`/`DownBlock2D`,
`UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D` and their AnimateDiff
`...Motion` versions) and the factory that builds every attention layer.

A stage is a sequence of layers over [N*F, H, W, C] (frames folded into the batch):
down: (resnet -> [attention] -> [motion module]) x L -> [downsampler];
mid: resnet -> (attention -> [motion module] -> resnet);
up: (concat skip -> resnet -> [attention] -> [motion module]) x (L+1) -> [upsampler].
Attribute names are diffusers' (`resnets`, `attentions`, `motion_modules`,
`downsamplers`, `upsamplers`); absent parts are empty lists.

Feature capture: every stage takes `capture`, a set of its own layer names
(`"resnets.0"`, `"motion_modules.2"`, ...), and returns `{name: output}` for those, from
the same pass.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
from flax import nnx

from t4a_jax.models.mvdream import (IPAdapterCrossAttention, MultiViewI2VAttention,
                                    SpatioTemporalAttention)
from t4a_jax.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from t4a_jax.models.transformer import (BasicTransformerBlock, Conditioning, CrossAttention,
                                        MotionModule, SelfAttention, TemporalSelfAttention,
                                        Transformer2DModel)
from t4a_jax.models.unet_config import UNetConfig

Features = dict[str, jax.Array]


class AttentionFactory:
    """Builds the attention layers of a U-Net as its config asks.

    Each method returns a module `attn(x, cond) -> x` (see `transformer.py`); a plain SD
    or AnimateDiff U-Net gets `SelfAttention`, `CrossAttention` and
    `TemporalSelfAttention`, and each MV-VDM switch of `UNetConfig` swaps one of them:
    - spatial `attn1`: `MultiViewSelfAttention` (`multiview_attention`, `use_i2v`);
    - spatial `attn2`: `ImagePromptCrossAttention` (`use_ip_adapter`);
    - motion `attn1`/`attn2`: `MotionSpatioTemporalAttention` (`spatio_temporal`).
    """

    def __init__(self, config: UNetConfig):
        self.config = config

    def _kwargs(self, dim: int, heads: int) -> dict[str, Any]:
        return dict(heads=heads, head_dim=dim // heads, dtype=self.config.dtype,
                    implementation=self.config.attention_implementation)

    def spatial_self(self, dim: int, heads: int, *, rngs: nnx.Rngs) -> nnx.Module:
        """`attn1` of a spatial transformer block, tokens [N*F, H*W, dim]."""
        config = self.config
        if config.multiview_attention or config.use_i2v:
            return MultiViewSelfAttention(dim, multiview=config.multiview_attention,
                                          use_i2v=config.use_i2v, **self._kwargs(dim, heads),
                                          rngs=rngs)
        return SelfAttention(dim, **self._kwargs(dim, heads), rngs=rngs)

    def cross(self, dim: int, heads: int, *, rngs: nnx.Rngs) -> nnx.Module:
        """`attn2` of a spatial transformer block (to the text tokens)."""
        config = self.config
        if config.use_ip_adapter:
            return ImagePromptCrossAttention(dim, cross_dim=config.cross_attention_dim,
                                             ip_scale=config.ip_scale,
                                             **self._kwargs(dim, heads), rngs=rngs)
        return CrossAttention(dim, cross_dim=config.cross_attention_dim,
                              **self._kwargs(dim, heads), rngs=rngs)

    def temporal(self, dim: int, heads: int, *, rngs: nnx.Rngs) -> nnx.Module:
        """`attn1` and `attn2` of a motion module block, x [N, F, H, W, dim]."""
        if self.config.spatio_temporal:
            return MotionSpatioTemporalAttention(
                dim, max_frames=self.config.motion_max_seq_length,
                **self._kwargs(dim, heads), rngs=rngs)
        return TemporalSelfAttention(dim, **self._kwargs(dim, heads), rngs=rngs)


class MultiViewSelfAttention(MultiViewI2VAttention):
    """Spatial `attn1` of the MV-VDM on tokens [N*F, H*W, C] (`mvdream.MultiViewI2VAttention`
    called with the layer contract): with `multiview` each frame attends across the
    `cond.num_views` views of its object, otherwise each image alone; with the I2V
    branch (built when `use_i2v`) frame 0 is the condition."""

    def __init__(self, dim: int, *, multiview: bool, **kwargs: Any):
        super().__init__(dim, **kwargs)
        self.multiview = multiview

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        return super().__call__(x, num_views=cond.num_views if self.multiview else 1,
                                num_frames=cond.num_frames)


class ImagePromptCrossAttention(IPAdapterCrossAttention):
    """Spatial `attn2` with IP-Adapter's decoupled image attention to `cond.ip_tokens`
    (`mvdream.IPAdapterCrossAttention` called with the layer contract)."""

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        return super().__call__(x, cond.context, cond.ip_tokens)


class MotionSpatioTemporalAttention(SpatioTemporalAttention):
    """Motion module `attn1`/`attn2` of Animate3D on x [N, F, H, W, C]
    (`mvdream.SpatioTemporalAttention` called with the layer contract)."""

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        return super().__call__(x, num_views=cond.num_views)


def spatial_transformer(config: UNetConfig, channels: int, heads: int,
                        attention: AttentionFactory, rngs: nnx.Rngs) -> Transformer2DModel:
    """An `attentions.i` entry: self- and cross-attention over [N*F, H, W, channels]."""
    blocks = [BasicTransformerBlock(channels, attention.spatial_self(channels, heads, rngs=rngs),
                                    attention.cross(channels, heads, rngs=rngs),
                                    dtype=config.dtype, rngs=rngs)
              for _ in range(config.transformer_layers_per_block)]
    return Transformer2DModel(channels, blocks, groups=config.norm_num_groups,
                              use_linear_projection=config.use_linear_projection,
                              dtype=config.dtype, rngs=rngs)


def motion_module(config: UNetConfig, channels: int, heads: int,
                  attention: AttentionFactory, rngs: nnx.Rngs) -> MotionModule:
    """A `motion_modules.i` entry: two temporal self-attentions per block along F."""
    blocks = [BasicTransformerBlock(channels, attention.temporal(channels, heads, rngs=rngs),
                                    attention.temporal(channels, heads, rngs=rngs),
                                    dtype=config.dtype, rngs=rngs)
              for _ in range(config.motion_transformer_layers)]
    return MotionModule(channels, blocks, groups=config.motion_norm_num_groups,
                        eps=config.motion_norm_eps, dtype=config.dtype, rngs=rngs)


def _resnet(config: UNetConfig, in_channels: int, out_channels: int,
            rngs: nnx.Rngs) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels, out_channels, temb_channels=config.temb_channels,
                         groups=config.norm_num_groups, eps=config.norm_eps,
                         dtype=config.dtype, rngs=rngs)


class _Stage(nnx.Module):
    """Shared parts of the three stages: the optional per-layer attentions and motion
    modules, and the list of layer names that `capture` may ask for."""

    def _optional_layers(self, config: UNetConfig, channels: int, count: int, *,
                         cross_attention: bool, heads: int, motion_heads: int, motion: bool,
                         attention: AttentionFactory, rngs: nnx.Rngs) -> None:
        self.attentions = nnx.List(
            [spatial_transformer(config, channels, heads, attention, rngs)
             for _ in range(count)] if cross_attention else [])
        self.motion_modules = nnx.List(
            [motion_module(config, channels, motion_heads, attention, rngs)
             for _ in range(count)] if motion else [])

    def _layer(self, i: int, x: jax.Array, cond: Conditioning, capture: frozenset[str],
               features: Features) -> jax.Array:
        """Attention i then motion module i (where present), recording captures."""
        if self.attentions:
            x = _tap(self.attentions[i](x, cond), f"attentions.{i}", capture, features)
        if self.motion_modules:
            x = _tap(self.motion_modules[i](x, cond), f"motion_modules.{i}", capture,
                     features)
        return x

    def feature_names(self) -> tuple[str, ...]:
        """The names `capture` accepts, in order of computation."""
        names = []
        for i in range(len(self.resnets)):
            names.append(f"resnets.{i}")
            names += [f"{kind}.{i}" for kind in ("attentions", "motion_modules")
                      if i < len(getattr(self, kind))]
        return tuple(names)


class DownBlock(_Stage):
    """One encoder level: x [N*F, H, W, C_in] -> x [N*F, H', W', C_out] and the skip
    tensors (one per layer, plus the downsampled output)."""

    def __init__(self, config: UNetConfig, in_channels: int, out_channels: int, *,
                 cross_attention: bool, heads: int, motion_heads: int, add_downsample: bool,
                 attention: AttentionFactory, rngs: nnx.Rngs):
        layers = config.layers_per_block
        self.resnets = nnx.List([_resnet(config, in_channels if i == 0 else out_channels,
                                         out_channels, rngs) for i in range(layers)])
        self._optional_layers(config, out_channels, layers, cross_attention=cross_attention,
                              heads=heads, motion_heads=motion_heads,
                              motion=config.motion_modules, attention=attention, rngs=rngs)
        self.downsamplers = nnx.List(
            [Downsample2D(out_channels, dtype=config.dtype, rngs=rngs)]
            if add_downsample else [])

    def __call__(self, x: jax.Array, cond: Conditioning, capture: frozenset[str] = frozenset(),
                 ) -> tuple[jax.Array, tuple[jax.Array, ...], Features]:
        features: Features = {}
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = _tap(resnet(x, cond.temb), f"resnets.{i}", capture, features)
            x = self._layer(i, x, cond, capture, features)
            skips.append(x)
        for downsampler in self.downsamplers:
            x = _tap(downsampler(x), "downsamplers.0", capture, features)
            skips.append(x)
        return x, tuple(skips), features

    def feature_names(self) -> tuple[str, ...]:
        return super().feature_names() + (("downsamplers.0",) if self.downsamplers else ())


class MidBlock(_Stage):
    """The bottleneck: resnets[0], then attention -> [motion module] -> resnet;
    x [N*F, H, W, C] -> same shape."""

    def __init__(self, config: UNetConfig, channels: int, *, heads: int, motion_heads: int,
                 attention: AttentionFactory, rngs: nnx.Rngs):
        self.resnets = nnx.List([_resnet(config, channels, channels, rngs) for _ in range(2)])
        self._optional_layers(config, channels, 1, cross_attention=True, heads=heads,
                              motion_heads=motion_heads,
                              motion=config.motion_modules and config.use_motion_mid_block,
                              attention=attention, rngs=rngs)

    def __call__(self, x: jax.Array, cond: Conditioning, capture: frozenset[str] = frozenset(),
                 ) -> tuple[jax.Array, Features]:
        features: Features = {}
        x = _tap(self.resnets[0](x, cond.temb), "resnets.0", capture, features)
        x = self._layer(0, x, cond, capture, features)
        x = _tap(self.resnets[1](x, cond.temb), "resnets.1", capture, features)
        return x, features


class UpBlock(_Stage):
    """One decoder level: x [N*F, H, W, C_prev] and this level's skips (consumed from the
    end) -> x [N*F, H'', W'', C_out]."""

    def __init__(self, config: UNetConfig, prev_channels: int, skip_channels: Iterable[int],
                 out_channels: int, *, cross_attention: bool, heads: int, motion_heads: int,
                 add_upsample: bool, attention: AttentionFactory, rngs: nnx.Rngs):
        skip_channels = tuple(skip_channels)
        self.resnets = nnx.List([
            _resnet(config, (prev_channels if i == 0 else out_channels) + skip, out_channels,
                    rngs) for i, skip in enumerate(skip_channels)])
        self._optional_layers(config, out_channels, len(skip_channels),
                              cross_attention=cross_attention, heads=heads,
                              motion_heads=motion_heads, motion=config.motion_modules,
                              attention=attention, rngs=rngs)
        self.upsamplers = nnx.List(
            [Upsample2D(out_channels, dtype=config.dtype, rngs=rngs)] if add_upsample else [])

    def __call__(self, x: jax.Array, skips: tuple[jax.Array, ...], cond: Conditioning,
                 capture: frozenset[str] = frozenset()) -> tuple[jax.Array, Features]:
        features: Features = {}
        for i, resnet in enumerate(self.resnets):
            x = jnp.concatenate([x, skips[-1 - i]], axis=-1)
            x = _tap(resnet(x, cond.temb), f"resnets.{i}", capture, features)
            x = self._layer(i, x, cond, capture, features)
        for upsampler in self.upsamplers:
            x = _tap(upsampler(x), "upsamplers.0", capture, features)
        return x, features

    def feature_names(self) -> tuple[str, ...]:
        return super().feature_names() + (("upsamplers.0",) if self.upsamplers else ())


def _tap(x: jax.Array, name: str, capture: frozenset[str], features: Features) -> jax.Array:
    if name in capture:
        features[name] = x
    return x
