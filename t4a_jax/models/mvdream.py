"""The MVDream / Animate3D / IP-Adapter pieces of the Stage One U-Net, in Flax NNX.

Standalone modules that the U-Net's transformer blocks use in place of a plain
`Attention`; tokens are channels-last [N, L, C].

- `CameraEmbedding`: MVDream's camera MLP (16 -> D -> D), added to the time embedding.
- `MultiViewI2VAttention`: the spatial `attn1` — multi-view self-attention plus the
  MV2V (I2V) adapter of Animate3D.
- `IPAdapterCrossAttention` and `ImageProjection`: the spatial `attn2` with IP-Adapter's
  decoupled image cross-attention, and the SD1.5 IP-Adapter image projection.
- `SpatioTemporalAttention`: both attentions of every Animate3D motion module — the
  AnimateDiff temporal self-attention blended with a multi-view spatial self-attention.

Parameter names and checkpoint keys. Attribute names mirror the PyTorch keys *relative
to the attention module*. In the Animate3D checkpoints the extra weights live on the
diffusers attention processor (`attn1.processor.to_q_i2v.weight`,
`attn2.processor.to_k_ip.0.weight`, `attn1.processor.alpha_blender.mix_factor`, ...);
here they sit directly on the module, so a converter maps them with the renames
`PROCESSOR_RENAMES` (`.processor.` -> `.`):

    attn1.to_q.weight                        -> attn1.to_q.kernel
    attn1.processor.to_q_i2v.weight          -> attn1.to_q_i2v.kernel
    attn2.processor.to_k_ip.0.weight         -> attn2.to_k_ip.0.kernel
    attn1.processor.alpha_blender.mix_factor -> attn1.alpha_blender.mix_factor

`time_pos_embed.pe` is a deterministic table (`SinusoidalPositionalEmbedding.table`), a
constant of the module rather than state, like the AnimateDiff table of
`transformer.TemporalSelfAttention`: it is never trained, never saved, and cannot be
left unfilled by a model built abstractly (`nnx.eval_shape`). A converter takes those
keys out of the state dict and checks them against the module's table.

Facts not fixed by the DESIGN page come from the released Animate3D code
(github.com/yanqinJiang/Animate3D, commit 443da6f,
`animatediff/models/attention_processor.py`, `animatediff/models/embeddings.py`,
`inference.py`, `configs/inference/inference.yaml`); each is cited where it is used.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from t4a_jax.models.attention import Attention, attend
from t4a_jax.models.layers import LayerNorm, Linear
from t4a_jax.models.transformer import sinusoidal_table

# Checkpoint key renames: processor-held weights become attributes of the module.
PROCESSOR_RENAMES: tuple[tuple[str, str], ...] = ((r"\.processor\.", "."),
                                                  (r"^processor\.", ""))


# ----------------------------------------------------------------------------- camera


class CameraEmbedding(nnx.Module):
    """MVDream camera embedding: `linear_2(silu(linear_1(camera)))`.

    camera [N, camera_dim] (the flattened 4x4 camera-to-world matrix) -> [N, embed_dim].
    The U-Net adds it to the time embedding once per view, repeated over frames.
    (Animate3D builds it as diffusers' `TimestepEmbedding(16, 1280, act_fn="silu")`.)
    """

    def __init__(self, camera_dim: int = 16, embed_dim: int = 1280, *, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.linear_1 = Linear(camera_dim, embed_dim, dtype=dtype, rngs=rngs)
        self.linear_2 = Linear(embed_dim, embed_dim, dtype=dtype, rngs=rngs)

    def __call__(self, camera: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(camera)))


# ------------------------------------------------------------------ multi-view + I2V


def views_to_frames(x: jax.Array, num_views: int, num_frames: int) -> jax.Array:
    """Rearrange `(b n f) l c -> (b f) (n l) c`: each frame's tokens of all n views."""
    bnf, l, c = x.shape
    b = bnf // (num_views * num_frames)
    x = x.reshape(b, num_views, num_frames, l, c).transpose(0, 2, 1, 3, 4)
    return x.reshape(b * num_frames, num_views * l, c)


def frames_to_views(x: jax.Array, num_views: int, num_frames: int) -> jax.Array:
    """The inverse of `views_to_frames`: `(b f) (n l) c -> (b n f) l c`."""
    bf, nl, c = x.shape
    b, l = bf // num_frames, nl // num_views
    x = x.reshape(b, num_frames, num_views, l, c).transpose(0, 2, 1, 3, 4)
    return x.reshape(b * num_views * num_frames, l, c)


class MultiViewI2VAttention(Attention):
    """The spatial self-attention `attn1` of the Animate3D U-Net (MVDream + MV2V adapter).

    With t = views_to_frames(x) [(b f), (n l), c] (every frame attends across its views),
    and t0 [b, (n l), c] the tokens of frame 0 of all views of the same object:

        mv  = attn(to_q(t), to_k(t), to_v(t))
        i2v = attn(to_q_i2v(t), to_k(t0), to_v(t0))        (the same t0 for every frame)
        out = frames_to_views(to_out(mv + to_out_i2v(i2v)))

    to_q/to_k/to_v/to_out are the frozen MVDream weights; to_q_i2v (initialised as a copy
    of to_q) and to_out_i2v (with bias, zero-initialised, so the branch starts as a no-op)
    are the trainable adapter. Source for the I2V keys/values: Animate3D's
    `MVDreamI2VXFormersAttnProcessor` computes K/V with the frozen `attn.to_k/to_v` on the
    multi-view tokens, takes frame 0 ("(b f) l c -> b f l c"[:, 0:1], l spanning all
    views) and repeats it over frames; its query is `to_q_i2v` of the same multi-view
    tokens, and `to_out_i2v(i2v)` is added before `attn.to_out`. With num_views=1,
    num_frames=1 and i2v=False this is plain self-attention.

    `use_i2v=False` builds MVDream's multi-view attention alone (no adapter parameters).
    """

    def __init__(self, query_dim: int, *, heads: int, head_dim: int, use_i2v: bool = True,
                 dtype=jnp.float32, implementation: str | None = None, rngs: nnx.Rngs):
        super().__init__(query_dim, heads=heads, head_dim=head_dim, dtype=dtype,
                         implementation=implementation, rngs=rngs)
        inner = heads * head_dim
        if use_i2v:
            self.to_q_i2v = Linear(query_dim, inner, use_bias=False, dtype=dtype,
                                   rngs=rngs)
            self.to_q_i2v.kernel[...] = self.to_q.kernel[...]
            self.to_out_i2v = Linear(inner, inner, dtype=dtype,
                                     kernel_init=nnx.initializers.zeros, rngs=rngs)
        else:
            self.to_q_i2v = self.to_out_i2v = None

    def __call__(self, x: jax.Array, *, num_views: int, num_frames: int,
                 i2v: bool | None = None) -> jax.Array:
        """x [(b n f), l, c] with the batch ordered (object, view, frame) -> same shape.
        `i2v`: run the I2V branch (default: when the module has one)."""
        if i2v is None:
            i2v = self.to_q_i2v is not None
        elif i2v and self.to_q_i2v is None:
            raise ValueError("MultiViewI2VAttention: i2v=True, but built with use_i2v=False")
        t = views_to_frames(x, num_views, num_frames)
        k, v = self.to_k(t), self.to_v(t)
        out = attend(self.to_q(t), k, v, self.heads, implementation=self.implementation)
        if i2v:
            bf, nl, c = t.shape
            b = bf // num_frames
            # All frames of one object share the frame-0 keys/values, so the queries of
            # its f frames attend together: [b, (f n l), c] over [b, (n l), c].
            q = self.to_q_i2v(t).reshape(b, num_frames * nl, -1)
            k0 = k.reshape(b, num_frames, nl, -1)[:, 0]
            v0 = v.reshape(b, num_frames, nl, -1)[:, 0]
            i2v_out = attend(q, k0, v0, self.heads, implementation=self.implementation)
            out = out + self.to_out_i2v(i2v_out.reshape(bf, nl, -1))
        return frames_to_views(self.to_out[0](out), num_views, num_frames)


# ------------------------------------------------------------------------ IP-Adapter


class ImageProjection(nnx.Module):
    """IP-Adapter SD1.5 image projection (`image_proj` in `ip-adapter_sd15.bin`).

    image_embeds [N, image_embed_dim] -> tokens [N, num_tokens, cross_dim]:
        tokens = LayerNorm(reshape(proj(image_embeds), [N, num_tokens, cross_dim]))
    The unconditional branch of classifier-free guidance feeds `image_embeds = 0`.
    """

    def __init__(self, image_embed_dim: int = 1024, cross_dim: int = 768,
                 num_tokens: int = 4, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_tokens = num_tokens
        self.proj = Linear(image_embed_dim, num_tokens * cross_dim, dtype=dtype,
                           rngs=rngs)
        self.norm = LayerNorm(cross_dim, epsilon=1e-5, dtype=dtype, rngs=rngs)

    def __call__(self, image_embeds: jax.Array) -> jax.Array:
        tokens = self.proj(image_embeds)
        return self.norm(tokens.reshape(tokens.shape[0], self.num_tokens, -1))


class IPAdapterCrossAttention(Attention):
    """The spatial cross-attention `attn2` with IP-Adapter's decoupled image attention.

    x [N, Lq, query_dim], text context [N, Lt, cross_dim], ip_tokens [N, Li, cross_dim]:
        q   = to_q(x)
        out = to_out(attn(q, to_k(text), to_v(text))
                     + ip_scale * attn(q, to_k_ip[0](ip), to_v_ip[0](ip)))
    `to_k_ip`/`to_v_ip` are one-element lists (no bias) to mirror the checkpoint keys
    `to_k_ip.0.weight`. `ip_tokens=None` skips the image branch (a plain text
    cross-attention); classifier-free guidance's unconditional branch instead passes the
    tokens of a zero image embedding.
    """

    def __init__(self, query_dim: int, *, heads: int, head_dim: int, cross_dim: int,
                 ip_scale: float = 1.0, dtype=jnp.float32, implementation: str | None = None,
                 rngs: nnx.Rngs):
        super().__init__(query_dim, heads=heads, head_dim=head_dim, cross_dim=cross_dim,
                         dtype=dtype, implementation=implementation, rngs=rngs)
        inner = heads * head_dim
        self.ip_scale = ip_scale
        self.to_k_ip = nnx.List([Linear(cross_dim, inner, use_bias=False, dtype=dtype,
                                        rngs=rngs)])
        self.to_v_ip = nnx.List([Linear(cross_dim, inner, use_bias=False, dtype=dtype,
                                        rngs=rngs)])

    def __call__(self, x: jax.Array, context: jax.Array,
                 ip_tokens: jax.Array | None = None) -> jax.Array:
        q = self.to_q(x)
        out = attend(q, self.to_k(context), self.to_v(context), self.heads,
                     implementation=self.implementation)
        if ip_tokens is not None:
            out = out + self.ip_scale * attend(q, self.to_k_ip[0](ip_tokens),
                                               self.to_v_ip[0](ip_tokens), self.heads,
                                               implementation=self.implementation)
        return self.to_out[0](out)


# ------------------------------------------------------------ spatio-temporal (motion)


def sine_position_encoding_2d(height: int, width: int, dim: int, *,
                              temperature: float = 10000.0, eps: float = 1e-6,
                              scale: float = 2 * math.pi) -> np.ndarray:
    """The normalised DETR sine position encoding of an height x width grid: [H, W, dim].

    Source: Animate3D `SinePositionalEncoding2D(dim // 2, normalize=True)` (from mmdet),
    i.e. offset 0, eps 1e-6, scale 2*pi, temperature 10000. With F = dim/2 features per
    axis, y = (row + 1) / (H + eps) * scale, x = (col + 1) / (W + eps) * scale and
    d_k = temperature^(2 floor(k/2) / F), feature k < F of an axis value a is
    sin(a / d_k) for even k and cos(a / d_k) for odd k; the result is [pos_y, pos_x].
    """
    if dim % 4:
        raise ValueError(f"the 2-D sine encoding needs dim divisible by 4, got {dim}")
    feats = dim // 2
    dim_t = temperature ** (2 * (np.arange(feats) // 2) / feats)

    def axis(n: int) -> np.ndarray:                       # [n, feats]
        a = np.arange(1, n + 1, dtype=np.float64)[:, None] / (n + eps) * scale / dim_t
        return np.where(np.arange(feats) % 2 == 0, np.sin(a), np.cos(a))

    pos_y = np.broadcast_to(axis(height)[:, None], (height, width, feats))
    pos_x = np.broadcast_to(axis(width)[None, :], (height, width, feats))
    return np.concatenate([pos_y, pos_x], axis=-1)


class SinusoidalPositionalEmbedding(nnx.Module):
    """The temporal position table of Animate3D's `time_pos_embed` (no state): `table`
    [1, max_len, dim] is `transformer.sinusoidal_table`, the checkpoint buffer `pe`;
    calling it adds `table[:, :L]` to tokens [N, L, dim] (L <= max_len)."""

    def __init__(self, dim: int, max_len: int = 32):
        self.dim = dim
        self.max_len = max_len

    @property
    def table(self) -> np.ndarray:
        return sinusoidal_table(self.max_len, self.dim)[None]

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + jnp.asarray(self.table[:, :x.shape[1]], x.dtype)


class AlphaBlender(nnx.Module):
    """diffusers' `AlphaBlender(merge_strategy="learned")`: with a = sigmoid(mix_factor),
    `a * x_spatial + (1 - a) * x_temporal`; `mix_factor` [1] starts at `alpha`."""

    def __init__(self, alpha: float = 0.0):
        self.mix_factor = nnx.Param(jnp.full((1,), alpha, jnp.float32))

    def __call__(self, x_spatial: jax.Array, x_temporal: jax.Array) -> jax.Array:
        a = jax.nn.sigmoid(self.mix_factor[...]).astype(x_spatial.dtype)
        return a * x_spatial + (1 - a) * x_temporal


class SpatioTemporalAttention(Attention):
    """One attention of an Animate3D motion module: temporal + multi-view spatial branch.

    Input/output x [B*V, F, H, W, C]: the (object, view) pairs ordered object-major, each
    a clip of F frames of an H x W feature grid (the motion module's layout after proj_in
    and the block's LayerNorm). With the temporal table P_t [F, C] and the 2-D encoding
    P_s [H, W, C] (`sine_position_encoding_2d`), both added to the q/k/v input only:

        temporal = to_out(attn over the F frames of each (b, v, h, w) of x + P_t)
                   with to_q/to_k/to_v/to_out            [tokens (b n h w) f c]
        spatial  = to_out_sp(attn over the V*H*W positions of each (b, f) of x + P_s)
                   with to_q_sp/to_k_sp/to_v_sp          [tokens (b f) (n h w) c]
        out      = sigmoid(m) * spatial + (1 - sigmoid(m)) * temporal,   m = mix_factor

    Sources (Animate3D `SpatioTemporalI2VXFormersAttnProcessor` with the inference config
    `use_spatial_encoding: true, spatial_encoding_type: sinusoid, use_camera_encoding:
    false, image_attn: false, use_alpha_blender: true`): the spatial tokens are taken
    from the processor input before the temporal table is added; P_s is computed per view
    on its own h x w grid (`"b (n h w) c -> (b n) c h w"`) and added to the input; the
    temporal table (`time_pos_embed`, max length 32) is added to the input of the
    temporal q/k/v (`inference.py` sets the transformer block's own `pos_embed = None`,
    so the U-Net must not add another one); the spatial branch shares the head count and
    the scale head_dim^-1/2 with the temporal one; `AlphaBlender(0.0, "learned")` is
    called as `alpha_blender(spatial, temporal)`.
    """

    def __init__(self, query_dim: int, *, heads: int, head_dim: int, max_frames: int = 32,
                 dtype=jnp.float32, implementation: str | None = None, rngs: nnx.Rngs):
        super().__init__(query_dim, heads=heads, head_dim=head_dim, dtype=dtype,
                         implementation=implementation, rngs=rngs)
        inner = heads * head_dim
        self.to_q_sp = Linear(query_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_k_sp = Linear(query_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_v_sp = Linear(query_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_out_sp = Linear(inner, query_dim, dtype=dtype, rngs=rngs)
        self.time_pos_embed = SinusoidalPositionalEmbedding(query_dim, max_frames)
        self.alpha_blender = AlphaBlender(0.0)

    def __call__(self, x: jax.Array, *, num_views: int) -> jax.Array:
        """x [B*V, F, H, W, C] -> [B*V, F, H, W, C]."""
        bv, f, h, w, c = x.shape
        b = bv // num_views

        # Temporal: (b n) f h w c -> (b n h w) f c.
        t = self.time_pos_embed(x.transpose(0, 2, 3, 1, 4).reshape(bv * h * w, f, c))
        temporal = self.to_out[0](attend(self.to_q(t), self.to_k(t), self.to_v(t),
                                         self.heads, implementation=self.implementation))
        temporal = temporal.reshape(bv, h, w, f, c).transpose(0, 3, 1, 2, 4)

        # Spatial: (b n) f h w c -> (b f) (n h w) c, the 2-D encoding per view grid.
        s = x + jnp.asarray(sine_position_encoding_2d(h, w, c), x.dtype)
        s = s.reshape(b, num_views, f, h, w, c).transpose(0, 2, 1, 3, 4, 5)
        s = s.reshape(b * f, num_views * h * w, c)
        spatial = self.to_out_sp(attend(self.to_q_sp(s), self.to_k_sp(s), self.to_v_sp(s),
                                        self.heads, implementation=self.implementation))
        spatial = spatial.reshape(b, f, num_views, h, w, c).transpose(0, 2, 1, 3, 4, 5)
        spatial = spatial.reshape(bv, f, h, w, c)

        return self.alpha_blender(spatial, temporal)
