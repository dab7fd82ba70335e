"""The frozen condition encoders of the MV-VDM, as training and sampling both use them.

    text = prompt_states(text_encoder, ids, num_views)    # ids [B, L] -> [B*V, L, D]
    embeds = image_embeddings(image_encoder, images)      # [N, H, W, 3] in [0, 1] -> [N, E]
    latents = frame_latents(vae, frames, key)             # [..., H, W, 3] in [-1, 1]
                                                          #   -> [..., h, w, C]

B objects with V views each: the U-Net takes one text sequence per object-view (the
object's prompt repeated over its views, views consecutive), the IP-Adapter image
embedding of each view's condition render, and VAE latents (a sample of the posterior,
times the VAE's scaling factor) of every frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from t4a_jax.models.clip import CLIPTextModel, CLIPVisionModelWithProjection, preprocess_images
from t4a_jax.models.vae import AutoencoderKL


def prompt_states(text_encoder: CLIPTextModel, ids: jax.Array, num_views: int) -> jax.Array:
    """Last hidden states of the prompts' token ids [B, L], each repeated for its
    `num_views` views: [B * num_views, L, D]."""
    return jnp.repeat(text_encoder(ids), num_views, axis=0)


def image_embeddings(image_encoder: CLIPVisionModelWithProjection,
                     images: jax.Array) -> jax.Array:
    """IP-Adapter image embeddings [N, E] of condition renders [N, H, W, 3] in [0, 1]
    (resized and normalised for the tower by `preprocess_images`)."""
    return image_encoder(preprocess_images(images, image_encoder.config.image_size))


def frame_latents(vae: AutoencoderKL, frames: jax.Array, key: jax.Array) -> jax.Array:
    """VAE latents [..., h, w, C] (posterior sample x scaling) of frames [..., H, W, 3] in
    [-1, 1], any leading dims (encoded as one batch)."""
    lead, (h, w, c) = frames.shape[:-3], frames.shape[-3:]
    latents = vae.sample_latents(frames.reshape((-1, h, w, c)), key)
    return latents.reshape(lead + latents.shape[1:])
