"""The LAION aesthetic predictor v1 (`sa_0_4_vit_l_14_linear.pth`): one `Linear(768, 1)`
on L2-normalised OpenAI CLIP ViT-L/14 image embeddings, VBench's aesthetic quality head.

    head = AestheticHead(AestheticHeadConfig(), rngs=nnx.Rngs(0))
    scores = head(unit_image_embeds)           # [N, 768] -> [N], about 1-10

`linear` holds the file's `weight` [1, 768] (as kernel [768, 1]) and `bias` [1]; the
conversion is `python -m tools.convert_weights sa_0_4_vit_l_14_linear.pth OUT --kind
aesthetic-head`. VBench divides the score by 10 (`evaluation.video_metrics.aesthetic`).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from t4a_jax.models.layers import Linear
from t4a_jax.sharding import annotate


@dataclasses.dataclass(frozen=True)
class AestheticHeadConfig:
    """in_features: the CLIP embedding width (768 for ViT-L/14)."""

    in_features: int = 768


class AestheticHead(nnx.Module):
    """unit image embeddings [N, in_features] -> scores [N] (not divided by 10)."""

    def __init__(self, config: AestheticHeadConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.linear = Linear(config.in_features, 1, rngs=rngs)
        annotate(self)

    def __call__(self, embeds: jax.Array) -> jax.Array:
        if embeds.ndim != 2 or embeds.shape[1] != self.config.in_features:
            raise ValueError(f"AestheticHead: embeddings must be [N, "
                             f"{self.config.in_features}], got {embeds.shape}")
        return self.linear(embeds)[:, 0]
