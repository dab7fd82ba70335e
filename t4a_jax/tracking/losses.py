"""Track4Animate3D's feature-level tracking supervision (paper Sec. 3.2, Eqs. 4-5).

Features come from the U-Net's `capture` (default the temporal motion module of
`up_blocks[1]`): [B*V, F, h, w, C], views of an object consecutive. Tracked points are
pixel positions in the training images (W x H, +0.5 pixel-centre convention) of
`queries.draw_points`: tracks [B, V, F, P, 2], visible [B, V, F, P].

Coordinate mapping. Image and feature map cover the same field of view: a pixel position
x in [0, W] is the feature-map position u = x * w / W in [0, w], whose cell j has its
centre at u = j + 0.5 (align_corners=False, as `F.grid_sample` and `jax.image.resize`).
Descriptors are sampled bilinearly, positions clamped to the outer cell centres (border
replication). Positions compared by `position_loss` are normalised to [-1, 1] (-1 = left
/ top image edge, +1 = right / bottom edge), PyTorch's grid-sample coordinates, so the
Huber loss (delta 1) does not depend on the image size.

Invisible points (the paper is silent): a point marked invisible by the tracker, or
padded, is left out. `correspondence_loss` averages over adjacent frame pairs where
the point is visible in both, `position_loss` over frames 2..F where it is visible
there and at frame 1. Both are means over the terms that count (zero when none does):
with every point visible this is the paper's sum divided by the number of terms, i.e.
Eq. 4 / Eq. 5 up to their constant (F - 1) / F from the 1/(nf) normaliser, which only
rescales the loss weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SOFT_ARGMAX_TEMPERATURE = 0.05
HUBER_DELTA = 1.0
_EPS = 1e-8


def video_features(features: jax.Array, num_views: int) -> jax.Array:
    """[B*V, F, h, w, C] -> [B, V, F, h, w, C]."""
    n = features.shape[0]
    if n % num_views:
        raise ValueError(f"features have {n} object-views, not a multiple of "
                         f"num_views={num_views}")
    return features.reshape((n // num_views, num_views) + features.shape[1:])


def to_feature_coords(points: jax.Array, image_size: tuple[int, int],
                      feature_size: tuple[int, int]) -> jax.Array:
    """Pixel positions [..., 2] (x, y) in an image of (H, W) -> feature-map positions
    in cell units (cell j spans [j, j + 1]) of a map of (h, w)."""
    (height, width), (h, w) = image_size, feature_size
    return points * jnp.array([w / width, h / height], points.dtype)


def sample_descriptors(features: jax.Array, points: jax.Array,
                       image_size: tuple[int, int]) -> jax.Array:
    """Bilinear descriptors h(p): features [B, V, F, h, w, C] at pixel positions
    points [B, V, F, P, 2] -> [B, V, F, P, C]."""
    h, w = features.shape[3:5]
    uv = to_feature_coords(points, image_size, (h, w)) - 0.5      # cell-centre grid
    x = jnp.clip(uv[..., 0], 0.0, w - 1.0)
    y = jnp.clip(uv[..., 1], 0.0, h - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, max(w - 2, 0)).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, max(h - 2, 0)).astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    flat = features.reshape(features.shape[:3] + (h * w, features.shape[-1]))

    def at(yi, xi):
        return jnp.take_along_axis(flat, (yi * w + xi)[..., None], axis=3)

    return ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1))
            + fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1)))


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine of the angle between a and b along the last axis (broadcasting)."""
    dot = jnp.sum(a * b, axis=-1)
    return dot / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), _EPS)


def correspondence_loss(descriptors: jax.Array, visible: jax.Array) -> jax.Array:
    """Eq. 4: mean of 1 - cos(h(p^{i,j}), h(p^{i,j+1})) over points and adjacent frames
    where the point is visible in both. descriptors [B, V, F, P, C], visible
    [B, V, F, P] -> scalar."""
    terms = 1.0 - cosine_similarity(descriptors[:, :, :-1], descriptors[:, :, 1:])
    counts = visible[:, :, :-1] & visible[:, :, 1:]
    return _masked_mean(terms, counts)


def soft_argmax_positions(features: jax.Array, reference: jax.Array,
                          temperature: float = SOFT_ARGMAX_TEMPERATURE) -> jax.Array:
    """p-hat: the softmax(cos / temperature)-weighted mean of the cell centres of every
    frame's map, for each point's reference descriptor. features [B, V, F, h, w, C],
    reference [B, V, P, C] -> [B, V, F, P, 2] (x, y) normalised to [-1, 1]."""
    b, v, f, h, w, c = features.shape
    flat = features.reshape(b, v, f, 1, h * w, c)
    similarity = cosine_similarity(flat, reference[:, :, None, :, None, :])  # [B,V,F,P,hw]
    weights = jax.nn.softmax(similarity / temperature, axis=-1)
    ys, xs = jnp.meshgrid((jnp.arange(h) + 0.5) / h, (jnp.arange(w) + 0.5) / w,
                          indexing="ij")
    centres = jnp.stack([xs.ravel(), ys.ravel()], axis=-1) * 2.0 - 1.0       # [hw, 2]
    return jnp.einsum("bvfpk,kd->bvfpd", weights, centres.astype(weights.dtype))


def normalized_positions(points: jax.Array, image_size: tuple[int, int]) -> jax.Array:
    """Pixel positions [..., 2] (x, y) in an image of (H, W) -> [-1, 1] coordinates."""
    height, width = image_size
    return points / jnp.array([width, height], points.dtype) * 2.0 - 1.0


def huber(x: jax.Array, delta: float = HUBER_DELTA) -> jax.Array:
    """Elementwise Huber loss (PyTorch's `huber_loss` terms): 0.5 x^2 inside |x| < delta,
    delta (|x| - 0.5 delta) outside."""
    ax = jnp.abs(x)
    return jnp.where(ax < delta, 0.5 * x * x, delta * (ax - 0.5 * delta))


def position_loss(features: jax.Array, descriptors: jax.Array, tracks: jax.Array,
                  visible: jax.Array, image_size: tuple[int, int], *,
                  temperature: float = SOFT_ARGMAX_TEMPERATURE,
                  delta: float = HUBER_DELTA) -> jax.Array:
    """Eq. 5: Huber(p^{i,j} - p-hat^{i,j}) over frames j = 2..F, p-hat from the frame-1
    descriptor h(p^{i,1}), summed over x and y and averaged over the points and frames
    where the point is visible at frame 1 and at j. features [B, V, F, h, w, C],
    descriptors [B, V, F, P, C], tracks [B, V, F, P, 2] pixels, visible [B, V, F, P]."""
    predicted = soft_argmax_positions(features[:, :, 1:], descriptors[:, :, 0],
                                      temperature)
    target = normalized_positions(tracks[:, :, 1:], image_size)
    terms = jnp.sum(huber(target - predicted, delta), axis=-1)
    return _masked_mean(terms, visible[:, :, :1] & visible[:, :, 1:])


def _masked_mean(terms: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(terms.dtype)
    return jnp.sum(terms * mask) / jnp.maximum(jnp.sum(mask), 1.0)
