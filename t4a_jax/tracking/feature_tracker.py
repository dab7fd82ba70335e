"""Point tracking by feature matching (the probe of paper Fig. 3, after DIFT, Tang et
al. 2023): take each query's descriptor on the first frame and, in every frame, go to
the position whose descriptor is most cosine-similar.

Features of one video [V, F, h, w, C] (any block of the U-Net) are first resized
bilinearly to `match_size` (h', w') so that matches land between the network's coarse
cells; a match is the centre of the best cell of that grid, mapped back to image pixels
(the +0.5 pixel-centre convention of `t4a_jax.data.tracks`). The matcher has no notion
of occlusion: every point is predicted visible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from t4a_jax.tracking.losses import cosine_similarity, sample_descriptors


def resize_features(features: jax.Array, size: tuple[int, int]) -> jax.Array:
    """[..., h, w, C] -> [..., h', w', C], bilinear (half-pixel centres)."""
    shape = features.shape[:-3] + tuple(size) + features.shape[-1:]
    return jax.image.resize(features, shape, method="bilinear")


def similarity_maps(features: jax.Array, descriptors: jax.Array) -> jax.Array:
    """Cosine similarity of every cell of features [V, F, h, w, C] to the descriptors
    [V, P, C] of the same view -> [V, F, P, h, w]."""
    return cosine_similarity(features[:, :, None], descriptors[:, None, :, None, None, :])


def track_by_features(features: jax.Array, queries: jax.Array,
                      image_size: tuple[int, int],
                      match_size: tuple[int, int] | None = None) -> jax.Array:
    """Tracks [V, F, P, 2] (x, y pixels) of the queries [V, P, 2] (pixels on frame 0)
    through features [V, F, h, w, C] of a video whose frames are `image_size` (H, W).
    `match_size`: the grid searched (default: the image size)."""
    height, width = image_size
    match_size = tuple(match_size or image_size)
    fine = resize_features(features, match_size)
    first = sample_descriptors(fine[None, :, :1], queries[None, :, None], image_size)
    maps = similarity_maps(fine, first[0, :, 0])                     # [V, F, P, h', w']
    mh, mw = match_size
    best = jnp.argmax(maps.reshape(maps.shape[:3] + (mh * mw,)), axis=-1)
    cells = jnp.stack([best % mw, best // mw], axis=-1).astype(features.dtype)
    return (cells + 0.5) * jnp.array([width / mw, height / mh], features.dtype)
