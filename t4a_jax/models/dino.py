"""DINO ViT (Caron et al. 2021) in Flax NNX: the image encoder of VBench's I2V subject
consistency (`i2v_subject`: DINO ViT-B/16, its final-norm CLS feature).

    dino = DINOViT(DINOConfig(), rngs=nnx.Rngs(0))          # ViT-B/16 at 224 px
    features = dino(pixel_values)                             # [N, 768]

`pixel_values` [N, S, S, 3] channels-last, ImageNet-normalised (`IMAGENET_MEAN/STD`;
`evaluation.video_metrics.dino_pixels` does VBench's resize and crop). The network is
the original's (`facebookresearch/dino`, `vision_transformer.py`; timm's
`vit_base_patch16_224.dino` is the same model under the same key names): a 16 x 16
patch convolution with bias, a CLS token and learned position embeddings, pre-LN
blocks (LayerNorm eps 1e-6, exact GELU, qkv with bias), a final LayerNorm; the output
is the normalised CLS token. The blocks are `clip.CLIPEncoder`'s (the same pre-LN
block); the converter (`tools/convert_weights/dino.py`) splits the fused `qkv` into
`q/k/v_proj` and renames `blocks.{i}` to `encoder.layers.{i}`. Images must be
`config.image_size` square (no position-embedding interpolation: VBench crops to 224).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from t4a_jax.models.clip import CLIPEncoder, CLIPVisionConfig
from t4a_jax.models.layers import LayerNorm
from t4a_jax.sharding import annotate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DINOConfig:
    """ViT sizes. Defaults: DINO ViT-B/16 (`dino_vitbase16_pretrain.pth`)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: int = 4
    image_size: int = 224
    patch_size: int = 16
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        try:
            self.blocks()                # CLIPVisionConfig checks the same sizes
        except ValueError as e:
            raise ValueError(f"DINOConfig: {e}") from None

    def blocks(self) -> CLIPVisionConfig:
        """The blocks' sizes as `clip.CLIPEncoder` takes them."""
        return CLIPVisionConfig(
            hidden_size=self.hidden_size, intermediate_size=self.mlp_ratio * self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, image_size=self.image_size,
            patch_size=self.patch_size, hidden_act="gelu", layer_norm_eps=self.layer_norm_eps)

    @classmethod
    def tiny(cls) -> DINOConfig:
        """A test-sized ViT: 16 x 16 images, 4 x 4 patches."""
        return cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   image_size=16, patch_size=4)


class DINOViT(nnx.Module):
    """pixel_values [N, S, S, 3] -> the final-norm CLS feature [N, hidden_size]."""

    def __init__(self, config: DINOConfig, *, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        self.config = config
        d, p = config.hidden_size, config.patch_size
        init = nnx.initializers.truncated_normal(0.02)
        self.patch_embed = nnx.Conv(3, d, (p, p), strides=(p, p), padding="VALID",
                                    dtype=dtype, rngs=rngs)
        self.cls_token = nnx.Param(init(rngs.params(), (1, 1, d)))
        tokens = config.blocks().num_patches + 1
        self.pos_embed = nnx.Param(init(rngs.params(), (1, tokens, d)))
        self.encoder = CLIPEncoder(config.blocks(), dtype=dtype,
                                   implementation=implementation, rngs=rngs)
        self.norm = LayerNorm(d, epsilon=config.layer_norm_eps, dtype=dtype, rngs=rngs)
        annotate(self)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        c = self.config
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (
                c.image_size, c.image_size, 3):
            raise ValueError(f"pixel_values must be [N, {c.image_size}, {c.image_size}, 3] "
                             f"(channels-last), got {pixel_values.shape}")
        patches = self.patch_embed(pixel_values)
        n, gh, gw, d = patches.shape
        cls = jnp.broadcast_to(self.cls_token[...].astype(patches.dtype), (n, 1, d))
        tokens = jnp.concatenate([cls, patches.reshape(n, gh * gw, d)], axis=1)
        tokens = tokens + self.pos_embed[...].astype(patches.dtype)
        return self.norm(self.encoder(tokens)[-1][:, 0])
