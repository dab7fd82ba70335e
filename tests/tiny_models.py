"""Tiny random Stage One models shared by the pipeline and sampling tests."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from t4a_jax.config_files import get_config
from t4a_jax.models.clip import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                                 CLIPVisionModelWithProjection)
from t4a_jax.models.io import abstract_model
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.models.unet import UNet
from t4a_jax.models.unet_config import UNetConfig
from t4a_jax.models.vae import AutoencoderKL, VAEConfig


def random_model(build: Callable[[nnx.Rngs], nnx.Module], seed: int) -> nnx.Module:
    """`build`'s module with random weights drawn in NumPy (no per-shape compilation):
    matrices and kernels N(0, 1/fan_in), norm scales N(1, 0.1^2), other vectors
    N(0, 0.1^2) (so every zero-initialised layer, such as the I2V output projection, is
    active)."""
    graphdef, state = nnx.split(abstract_model(build))
    rng = np.random.default_rng(seed)

    def draw(path: tuple, leaf: Any) -> jax.Array:
        if len(leaf.shape) >= 2:
            value = rng.normal(0, np.prod(leaf.shape[:-1]) ** -0.5, leaf.shape)
        else:
            is_scale = any(getattr(key, "key", None) == "scale" for key in path)
            value = rng.normal(0, 0.1, leaf.shape) + is_scale
        return jnp.asarray(value, jnp.float32)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def tiny_mvvdm_models(tokenizer: CLIPTokenizer) -> dict[str, Any]:
    """A two-level MV-VDM U-Net with every part on (cameras, multi-view attention, I2V,
    IP-Adapter, spatio-temporal motion modules), the tiny VAE and CLIP towers, and
    `tokenizer`: the keyword arguments of `ModelBundle`."""
    unet_config = UNetConfig.from_config_dict(get_config("unet", "tiny_all_parts"))
    return dict(
        unet=random_model(lambda rngs: UNet(unet_config, rngs=rngs), 0),
        vae=random_model(lambda rngs: AutoencoderKL(VAEConfig.tiny(), rngs=rngs), 1),
        text_encoder=random_model(lambda rngs: CLIPTextModel(CLIPTextConfig.tiny(),
                                                             rngs=rngs), 2),
        image_encoder=random_model(lambda rngs: CLIPVisionModelWithProjection(
            CLIPVisionConfig.tiny(), rngs=rngs), 3),
        tokenizer=tokenizer)
