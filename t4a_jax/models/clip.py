"""CLIP text and image towers in Flax NNX, with transformers' parameter names.

- `CLIPTextModel`: the SD1.5 text encoder (ViT-L/14 text tower). Token ids [N, L] ->
  last hidden state [N, L, D] (what the U-Net cross-attends to), causal self-attention,
  pre-LN blocks, final LayerNorm. `CLIPTextModelWithProjection` adds `text_projection`
  (no bias): ids -> text_embeds [N, projection_dim], the prompt side of CLIP scores.
  Parameter paths mirror the checkpoint keys
  `text_model.embeddings.token_embedding.weight`,
  `text_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj.*`, `...mlp.fc{1,2}.*`,
  `...layer_norm{1,2}.*`, `text_model.final_layer_norm.*`.
- `CLIPVisionModelWithProjection`: the IP-Adapter image encoder (OpenCLIP ViT-H/14).
  Pixels [N, H, W, 3] (channels-last, already CLIP-normalised, see `preprocess_images`)
  -> image embedding [N, projection_dim]. Paths mirror `vision_model.embeddings.*`,
  `vision_model.pre_layrnorm` (transformers' spelling), `vision_model.encoder.*`,
  `vision_model.post_layernorm`, `visual_projection`.

Tokens are [N, L, D] throughout. Weight conversion lives in `tools/convert_weights/clip.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from t4a_jax.models.layers import LayerNorm, Linear, gelu
from t4a_jax.sharding import annotate

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": gelu,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}

# transformers' defaults, used for keys a (diff-saved) config.json leaves out.
_HF_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                         num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77, projection_dim=512,
                         hidden_act="quick_gelu", layer_norm_eps=1e-5, eos_token_id=49407)
_HF_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, num_channels=3, image_size=224,
                           patch_size=32, projection_dim=512, hidden_act="quick_gelu",
                           layer_norm_eps=1e-5)


def _check_act(name: str, where: str) -> None:
    if name not in _ACTIVATIONS:
        raise ValueError(f"{where}: hidden_act {name!r} is not supported "
                         f"(expected one of {sorted(_ACTIVATIONS)})")


def _sub_config(d: Mapping[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tower's dict from a tower config or a full CLIPConfig (`text_config` /
    `vision_config`, legacy `*_config_dict` winning), plus top-level overrides."""
    if key in d or f"{key}_dict" in d:
        sub = {**(d.get(key) or {}), **(d.get(f"{key}_dict") or {})}
        top = {"projection_dim": d["projection_dim"]} if "projection_dim" in d else {}
        return sub, top
    return dict(d), {}


def _pick(cls, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Text tower sizes. Defaults: SD1.5's CLIP ViT-L/14 text encoder.

    `eos_token_id` selects the pooled token as transformers does: the legacy value 2 (SD1.5's
    config.json) pools at the argmax of the ids (the EOS id is the largest of the original
    vocabulary), any other value at the first occurrence of that id.
    """

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    projection_dim: int = 768
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 2

    def __post_init__(self):
        _check_act(self.hidden_act, "CLIPTextConfig")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"CLIPTextConfig: hidden_size {self.hidden_size} is not divisible "
                             f"by num_attention_heads {self.num_attention_heads}")

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any]) -> CLIPTextConfig:
        """From a transformers `config.json` dict (CLIPTextModel or a full CLIPConfig)."""
        sub, top = _sub_config(d, "text_config")
        values = {**_HF_TEXT_DEFAULTS, **sub, **top}
        if isinstance(values["eos_token_id"], (list, tuple)):
            values["eos_token_id"] = values["eos_token_id"][0]
        return cls(**_pick(cls, values))

    @classmethod
    def tiny(cls, hidden_act: str = "quick_gelu") -> CLIPTextConfig:
        """A test-sized tower (ids < 1000, 16 positions)."""
        return cls(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, max_position_embeddings=16, projection_dim=16,
                   hidden_act=hidden_act)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """Image tower sizes. Defaults: OpenCLIP ViT-H/14, IP-Adapter SD1.5's image encoder."""

    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_hidden_layers: int = 32
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    projection_dim: int = 1024
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        _check_act(self.hidden_act, "CLIPVisionConfig")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"CLIPVisionConfig: hidden_size {self.hidden_size} is not "
                             f"divisible by num_attention_heads {self.num_attention_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIPVisionConfig: image_size {self.image_size} is not a "
                             f"multiple of patch_size {self.patch_size}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any]) -> CLIPVisionConfig:
        """From a transformers `config.json` dict (CLIPVisionModelWithProjection or a full
        CLIPConfig). Only square images and patches are supported."""
        sub, top = _sub_config(d, "vision_config")
        values = {**_HF_VISION_DEFAULTS, **sub, **top}
        for key in ("image_size", "patch_size"):
            v = values[key]
            if isinstance(v, (list, tuple)):
                if len(set(v)) != 1:
                    raise ValueError(f"CLIPVisionConfig: non-square {key} {v} is not supported")
                values[key] = v[0]
        return cls(**_pick(cls, values))

    @classmethod
    def tiny(cls, hidden_act: str = "gelu") -> CLIPVisionConfig:
        """A test-sized tower: 16x16 images, 4x4 patches."""
        return cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, image_size=16, patch_size=4, projection_dim=24,
                   hidden_act=hidden_act)


class CLIPAttention(nnx.Module):
    """Multi-head self-attention, all four projections with bias."""

    def __init__(self, dim: int, heads: int, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        self.heads = heads
        self.implementation = implementation
        linear = lambda: Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.q_proj, self.k_proj = linear(), linear()
        self.v_proj, self.out_proj = linear(), linear()

    def __call__(self, x: jax.Array, *, causal: bool = False) -> jax.Array:
        """x [N, L, D] -> [N, L, D]; `causal`: token i attends to tokens <= i."""
        n, l, d = x.shape
        split = lambda t: t.reshape(n, l, self.heads, d // self.heads)
        out = jax.nn.dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)),
                                           split(self.v_proj(x)), is_causal=causal,
                                           implementation=self.implementation)
        return self.out_proj(out.reshape(n, l, d))


class CLIPMLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, act: str, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.act = _ACTIVATIONS[act]
        self.fc1 = Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: CLIPTextConfig | CLIPVisionConfig, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        d, eps = config.hidden_size, config.layer_norm_eps
        self.self_attn = CLIPAttention(d, config.num_attention_heads, dtype=dtype,
                                       implementation=implementation, rngs=rngs)
        self.layer_norm1 = LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)
        self.mlp = CLIPMLP(d, config.intermediate_size, config.hidden_act, dtype=dtype,
                           rngs=rngs)
        self.layer_norm2 = LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, causal: bool = False) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
    def __init__(self, config: CLIPTextConfig | CLIPVisionConfig, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        self.layers = nnx.List([
            CLIPEncoderLayer(config, dtype=dtype, implementation=implementation, rngs=rngs)
            for _ in range(config.num_hidden_layers)])

    def __call__(self, x: jax.Array, *, causal: bool = False) -> list[jax.Array]:
        """x [N, L, D] -> the hidden states: the input and every layer's output
        (num_hidden_layers + 1 arrays [N, L, D], as transformers' `hidden_states`)."""
        states = [x]
        for layer in self.layers:
            states.append(layer(states[-1], causal=causal))
        return states


class CLIPTextEmbeddings(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.token_embedding = nnx.Embed(config.vocab_size, config.hidden_size, dtype=dtype,
                                         embedding_init=init, rngs=rngs)
        self.position_embedding = nnx.Embed(config.max_position_embeddings,
                                            config.hidden_size, dtype=dtype,
                                            embedding_init=init, rngs=rngs)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        """input_ids [N, L] -> [N, L, D], positions 0..L-1."""
        return (self.token_embedding(input_ids)
                + self.position_embedding(jnp.arange(input_ids.shape[1]))[None])


class CLIPTextTransformer(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        self.embeddings = CLIPTextEmbeddings(config, dtype=dtype, rngs=rngs)
        self.encoder = CLIPEncoder(config, dtype=dtype, implementation=implementation,
                                   rngs=rngs)
        self.final_layer_norm = LayerNorm(config.hidden_size,
                                          epsilon=config.layer_norm_eps, dtype=dtype,
                                          rngs=rngs)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        states = self.encoder(self.embeddings(input_ids), causal=True)
        return self.final_layer_norm(states[-1])


class CLIPTextModel(nnx.Module):
    """The CLIP text encoder: input_ids [N, L] int (L <= max_position_embeddings) ->
    last_hidden_state [N, L, hidden_size] after the final LayerNorm."""

    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        self.config = config
        self.text_model = CLIPTextTransformer(config, dtype=dtype,
                                              implementation=implementation, rngs=rngs)
        annotate(self)

    def __call__(self, input_ids: jax.Array, *, return_pooled: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """last_hidden_state [N, L, D]; with `return_pooled`, also the EOS token's state
        [N, D] (transformers' `pooler_output`, see `CLIPTextConfig.eos_token_id`)."""
        if input_ids.ndim != 2 or input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"input_ids must be [N, L] with L <= "
                             f"{self.config.max_position_embeddings}, got {input_ids.shape}")
        hidden = self.text_model(input_ids)
        if not return_pooled:
            return hidden
        ids = jnp.asarray(input_ids, jnp.int32)
        if self.config.eos_token_id == 2:  # legacy configs: EOS is the largest original id
            index = jnp.argmax(ids, axis=-1)
        else:
            index = jnp.argmax(ids == self.config.eos_token_id, axis=-1)
        return hidden, jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]


class CLIPTextModelWithProjection(CLIPTextModel):
    """The CLIP text encoder with its projection: input_ids [N, L] -> text_embeds
    [N, projection_dim], `text_projection` (no bias) of the pooled EOS state
    (transformers' `CLIPTextModelWithProjection`; not normalised)."""

    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        super().__init__(config, dtype=dtype, implementation=implementation, rngs=rngs)
        self.text_projection = Linear(config.hidden_size, config.projection_dim,
                                      use_bias=False, dtype=dtype, rngs=rngs)
        annotate(self)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        _, pooled = super().__call__(input_ids, return_pooled=True)
        return self.text_projection(pooled)


class CLIPVisionEmbeddings(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        d, p = config.hidden_size, config.patch_size
        self.dtype = dtype
        self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (d,)) * d ** -0.5)
        self.patch_embedding = nnx.Conv(config.num_channels, d, (p, p), strides=(p, p),
                                        padding="VALID", use_bias=False, dtype=dtype,
                                        rngs=rngs)
        self.position_embedding = nnx.Embed(config.num_patches + 1, d, dtype=dtype,
                                            embedding_init=nnx.initializers.normal(0.02),
                                            rngs=rngs)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        """pixel_values [N, H, W, C] -> tokens [N, 1 + (H/p)*(W/p), D], CLS first,
        patches in row-major order."""
        patches = self.patch_embedding(pixel_values)
        n, gh, gw, d = patches.shape
        cls = jnp.broadcast_to(self.class_embedding[...].astype(patches.dtype), (n, 1, d))
        tokens = jnp.concatenate([cls, patches.reshape(n, gh * gw, d)], axis=1)
        return tokens + self.position_embedding.embedding[...].astype(patches.dtype)[None]


class CLIPVisionTransformer(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        d, eps = config.hidden_size, config.layer_norm_eps
        self.embeddings = CLIPVisionEmbeddings(config, dtype=dtype, rngs=rngs)
        self.pre_layrnorm = LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)
        self.encoder = CLIPEncoder(config, dtype=dtype, implementation=implementation,
                                   rngs=rngs)
        self.post_layernorm = LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)

    def __call__(self, pixel_values: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """-> (pooled [N, D]: post_layernorm of the last CLS state, hidden states)."""
        states = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return self.post_layernorm(states[-1][:, 0]), states


class CLIPVisionModelWithProjection(nnx.Module):
    """The CLIP image encoder: pixel_values [N, S, S, C] (S = config.image_size, CLIP-
    normalised) -> image_embeds [N, projection_dim]."""

    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        self.config = config
        self.vision_model = CLIPVisionTransformer(config, dtype=dtype,
                                                  implementation=implementation, rngs=rngs)
        self.visual_projection = Linear(config.hidden_size, config.projection_dim,
                                        use_bias=False, dtype=dtype, rngs=rngs)
        annotate(self)

    def __call__(self, pixel_values: jax.Array, *, output_hidden_states: bool = False
                 ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
        """image_embeds [N, projection_dim]; with `output_hidden_states`, also the
        num_hidden_layers + 1 hidden states [N, 1 + num_patches, D] (embeddings after
        pre_layrnorm, then every layer; [-2] is IP-Adapter Plus's penultimate state)."""
        c = self.config
        expected = (c.image_size, c.image_size, c.num_channels)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"pixel_values must be [N, {c.image_size}, {c.image_size}, "
                             f"{c.num_channels}] (channels-last), got {pixel_values.shape}")
        pooled, states = self.vision_model(pixel_values)
        embeds = self.visual_projection(pooled)
        return (embeds, states) if output_hidden_states else embeds


def preprocess_images(images: jax.Array, image_size: int = 224) -> jax.Array:
    """images [N, H, W, 3] RGB in [0, 1] -> CLIP pixel_values [N, S, S, 3], S = image_size.

    As transformers' `CLIPImageProcessor`: resize the shorter side to S (bicubic), centre
    crop S x S, normalise with the CLIP mean/std. The resize is `jax.image.resize`'s
    antialiased bicubic on floats, so pixels differ slightly (about 1e-2) from PIL's
    resampling of uint8 images; no rounding to uint8 happens here.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got {images.shape}")
    n, h, w, _ = images.shape
    scale = image_size / min(h, w)
    rh, rw = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    x = jax.image.resize(images.astype(jnp.float32), (n, rh, rw, 3), method="bicubic")
    top, left = (rh - image_size) // 2, (rw - image_size) // 2
    x = x[:, top:top + image_size, left:left + image_size]
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)
