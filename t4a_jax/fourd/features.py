"""The diffusion-feature half of the hybrid motion feature (paper Eq. 6):
`F(x, t) = HexPlane(x, t) (+) Diff(x, t)`.

    params = init_feature_params(key, channels=1280, dim=16)
    diff = diffusion_features(params, maps[f], uv, visible)      # [N, dim] at frame f

Inputs, computed once per object (`t4a_jax.reconstruction.priors`): the Stage One
U-Net's feature maps `maps` [F, V, h, w, C] of the multi-view video (one slightly
noised pass, the training's feature tap), and for every canonical Gaussian centre its
place in each view's map, `uv` [V, N, 2] (x right, y down, in map pixels with pixel
centres at +0.5: an image pixel coordinate times h / H), with `visible` [V, N] (on the
image, not occluded, not facing away; see `render.visibility.depth_visible` and
`render.mesh.ray_visible`).

At frame f, each view's map is sampled bilinearly at `uv` (border clamp: a sample off
the map takes the nearest edge pixel), the samples are averaged over the views that
see the centre, and a learned linear projection brings the C channels down to `dim`; a
centre that no view sees gets the learned "unseen" vector instead. The projection is
applied to the maps before sampling (it commutes with bilinear interpolation and with
the mean), so a step samples `dim` channels, not C. The maps are data (no gradient);
`params` {"projection": (W [C, dim], b [dim]), "unseen": [dim]} are optimised with the
decoder.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def init_feature_params(key: jax.Array, channels: int, dim: int) -> dict[str, Any]:
    """The projection (LeCun-normal W, zero b) and a zero "unseen" vector."""
    if channels < 1 or dim < 1:
        raise ValueError(f"init_feature_params: channels={channels}, dim={dim} must be >= 1")
    weight = jax.random.normal(key, (channels, dim), jnp.float32) / jnp.sqrt(channels)
    return {"projection": (weight, jnp.zeros((dim,), jnp.float32)),
            "unseen": jnp.zeros((dim,), jnp.float32)}


def sample_maps(maps: jax.Array, uv: jax.Array) -> jax.Array:
    """Bilinear samples [V, N, C] of maps [V, h, w, C] at uv [V, N, 2] (map pixels,
    centres at +0.5, border clamp)."""
    _, h, w, _ = maps.shape
    x = jnp.clip(uv[..., 0] - 0.5, 0.0, w - 1)
    y = jnp.clip(uv[..., 1] - 0.5, 0.0, h - 1)
    x0 = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, max(w - 2, 0))
    y0 = jnp.clip(jnp.floor(y).astype(jnp.int32), 0, max(h - 2, 0))
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]

    def one(m, y0, y1, x0, x1, fx, fy):
        top = m[y0, x0] * (1 - fx) + m[y0, x1] * fx
        bottom = m[y1, x0] * (1 - fx) + m[y1, x1] * fx
        return top * (1 - fy) + bottom * fy

    return jax.vmap(one)(maps, y0, y1, x0, x1, fx, fy)


def diffusion_features(params: dict[str, Any], maps: jax.Array, uv: jax.Array,
                       visible: jax.Array) -> jax.Array:
    """Features [N, dim] of the centres at one frame: maps [V, h, w, C] of that frame,
    uv [V, N, 2], visible [V, N] bool (module docstring)."""
    weight, bias = params["projection"]
    projected = jnp.einsum("vhwc,cd->vhwd", jax.lax.stop_gradient(maps).astype(weight.dtype),
                           weight) + bias
    samples = sample_maps(projected, uv)                                 # [V, N, dim]
    seen = visible.astype(samples.dtype)[..., None]
    count = jnp.sum(seen, axis=0)                                        # [N, 1]
    mean = jnp.sum(samples * seen, axis=0) / jnp.maximum(count, 1.0)
    return jnp.where(count > 0, mean, params["unseen"])
