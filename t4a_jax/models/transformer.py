"""Token mixers of the U-Net, channels-last: the spatial transformer (diffusers
`Transformer2DModel`), the AnimateDiff motion module (diffusers `AnimateDiffTransformer3D`),
their attention layers and GEGLU feed-forward.

Shapes. N = B*V object-views, F frames. The 2-D layers see frames folded into the
batch, [N*F, H, W, C] with frames fastest (`(b v f)`); a motion module unfolds them to
[N, F, H, W, C] and attends along F over `(b v h w) f c` tokens. Every layer also gets
the call's `Conditioning`.

Seams for the MV-VDM. Both transformers are stacks of `BasicTransformerBlock`s
(norm1 -> attn1 -> norm2 -> attn2 -> norm3 -> ff, residual around each), and the block
is *given* its two attention modules (see `unet_blocks.AttentionFactory`); an attention
layer is any module `attn(x, cond) -> x` that keeps the shape of `x`. Here:
`SelfAttention` and `CrossAttention` on spatial tokens [N*F, H*W, C] and
`TemporalSelfAttention` on [N, F, H, W, C] (it sees the whole video, so a
spatio-temporal replacement can add its spatial branch). Multi-view attention regroups
tokens with `cond.num_views` / `cond.num_frames`; IP-Adapter image tokens are
`cond.ip_tokens` (see `unet_blocks.AttentionFactory` for which layer is used where).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from t4a_jax.models.attention import Attention
from t4a_jax.models.layers import GroupNorm, LayerNorm, Linear, gelu

_LAYER_NORM_EPS = 1e-5     # every LayerNorm of a BasicTransformerBlock
_TRANSFORMER_NORM_EPS = 1e-6  # the GroupNorm in front of Transformer2DModel / motion module


@struct.dataclass
class Conditioning:
    """What every U-Net layer sees besides its feature map (a pytree; the ints are
    static).

    temb:       [N*F, T] time embedding (+ camera embedding), repeated over frames.
    context:    [N*F, L, D] text tokens for cross-attention, repeated over frames.
    num_views:  V, object-views are consecutive in N = B*V.
    num_frames: F.
    ip_tokens:  [N*F, K, D] IP-Adapter image tokens repeated over frames, or None when the
                U-Net has no IP-Adapter.
    """

    temb: jax.Array
    context: jax.Array
    num_views: int = struct.field(pytree_node=False)
    num_frames: int = struct.field(pytree_node=False)
    ip_tokens: jax.Array | None = None


class SelfAttention(Attention):
    """Spatial self-attention (`attn1`) over the H*W tokens of each image [N*F, L, C]."""

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        return super().__call__(x)


class CrossAttention(Attention):
    """Cross-attention (`attn2`) of image tokens [N*F, L, C] to `cond.context`."""

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        return super().__call__(x, cond.context)


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """The motion modules' 1-D position table [length, dim] in float64: interleaved
    sin/cos, `pe[p, 2i] = sin(p / 10000^(2i/dim))`, `pe[p, 2i+1] = cos(...)`. Equals
    diffusers' `SinusoidalPositionalEmbedding.pe[0]`, AnimateDiff's `pos_encoder.pe[0]`
    and Animate3D's `time_pos_embed.pe[0]` (max length 32)."""
    position = np.arange(length, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float64) * (-math.log(10000.0) / dim))
    table = np.zeros((length, dim), np.float64)
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div)
    return table


class TemporalSelfAttention(Attention):
    """Self-attention along frames: x [N, F, H, W, C] -> [N, F, H, W, C].

    The position table (`sinusoidal_table`, a constant, not a parameter) is added to the
    (normalised) input of q, k and v, as diffusers' `pos_embed` and Animate3D's
    `time_pos_embed` do; tokens are `(n h w) f c`."""

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        n, f, h, w, c = x.shape
        x = x + jnp.asarray(sinusoidal_table(f, c), x.dtype)[None, :, None, None, :]
        tokens = x.transpose(0, 2, 3, 1, 4).reshape(n * h * w, f, c)
        out = super().__call__(tokens)
        return out.reshape(n, h, w, f, c).transpose(0, 3, 1, 2, 4)


class GEGLU(nnx.Module):
    """`proj` to 2*inner channels, split into (h, gate), h * GELU(gate) (exact GELU)."""

    def __init__(self, dim: int, inner: int, *, dtype: Any, rngs: nnx.Rngs):
        self.proj = Linear(dim, 2 * inner, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h, gate = jnp.split(self.proj(x), 2, axis=-1)
        return h * gelu(gate)


class FeedForward(nnx.Module):
    """diffusers `FeedForward` with GEGLU: `net.0` (GEGLU), `net.2` (Linear back to dim).
    Slot `net.1` is diffusers' parameter-free dropout, kept empty so key names match."""

    def __init__(self, dim: int, *, mult: int = 4, dtype: Any, rngs: nnx.Rngs):
        self.net = nnx.List([GEGLU(dim, mult * dim, dtype=dtype, rngs=rngs), None,
                             Linear(mult * dim, dim, dtype=dtype, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nnx.Module):
    """Pre-norm block: x += attn1(norm1(x)); x += attn2(norm2(x)); x += ff(norm3(x)).

    x is [..., C] in whatever layout `attn1`/`attn2` expect (LayerNorms and the
    feed-forward act on the last axis)."""

    def __init__(self, dim: int, attn1: nnx.Module, attn2: nnx.Module, *, dtype: Any,
                 rngs: nnx.Rngs):
        norm = lambda: LayerNorm(dim, epsilon=_LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
        self.norm1 = norm()
        self.attn1 = attn1
        self.norm2 = norm()
        self.attn2 = attn2
        self.norm3 = norm()
        self.ff = FeedForward(dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        x = x + self.attn1(self.norm1(x), cond)
        x = x + self.attn2(self.norm2(x), cond)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nnx.Module):
    """GroupNorm -> proj_in -> transformer blocks over H*W tokens -> proj_out, plus the
    input: x [N*F, H, W, C] -> [N*F, H, W, C]. `proj_in`/`proj_out` are 1x1 convs (SD1.5)
    or Linears (`use_linear_projection`, SD2); the two are the same map."""

    def __init__(self, channels: int, blocks: Sequence[BasicTransformerBlock], *,
                 groups: int, use_linear_projection: bool, dtype: Any, rngs: nnx.Rngs):
        self.norm = GroupNorm(channels, num_groups=groups, epsilon=_TRANSFORMER_NORM_EPS,
                              dtype=dtype, rngs=rngs)
        if use_linear_projection:
            proj = lambda: Linear(channels, channels, dtype=dtype, rngs=rngs)
        else:
            proj = lambda: nnx.Conv(channels, channels, (1, 1), dtype=dtype, rngs=rngs)
        self.proj_in = proj()
        self.transformer_blocks = nnx.List(blocks)
        self.proj_out = proj()

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        m, h, w, c = x.shape
        tokens = self.proj_in(self.norm(x)).reshape(m, h * w, c)
        for block in self.transformer_blocks:
            tokens = block(tokens, cond)
        return x + self.proj_out(tokens.reshape(m, h, w, c))


class MotionModule(nnx.Module):
    """AnimateDiff temporal transformer: GroupNorm (over C-groups x F x H x W of each
    object-view) -> proj_in (Linear) -> blocks with two temporal self-attentions ->
    proj_out, plus the input: x [N*F, H, W, C] -> [N*F, H, W, C]."""

    def __init__(self, channels: int, blocks: Sequence[BasicTransformerBlock], *,
                 groups: int, eps: float, dtype: Any, rngs: nnx.Rngs):
        self.norm = GroupNorm(channels, num_groups=groups, epsilon=eps, dtype=dtype,
                              rngs=rngs)
        self.proj_in = Linear(channels, channels, dtype=dtype, rngs=rngs)
        self.transformer_blocks = nnx.List(blocks)
        self.proj_out = Linear(channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cond: Conditioning) -> jax.Array:
        nf, h, w, c = x.shape
        video = x.reshape(nf // cond.num_frames, cond.num_frames, h, w, c)
        hidden = self.proj_in(self.norm(video))
        for block in self.transformer_blocks:
            hidden = block(hidden, cond)
        return x + self.proj_out(hidden).reshape(nf, h, w, c)
