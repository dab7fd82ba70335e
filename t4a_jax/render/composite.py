"""Front-to-back alpha compositing of depth-sorted tile lists, with a recomputing VJP.

Per pixel p of a tile and Gaussian i of the tile's list (nearest first):
    power_i = 0.5 (a dx^2 + c dy^2) + b dx dy,   d = pixel centre - mean2d_i
    alpha_i = min(0.99, o_i exp(-power_i)),      skipped when alpha_i < 1/255
    T_i     = prod_{j < i, j included} (1 - alpha_j)
    out     = sum_i alpha_i T_i f_i              f = (r, g, b, depth)
and the pixel stops before the first Gaussian that would bring T to 1e-4 or below.

The work is done in batches of `batch_size` list entries with a `while_loop` per tile
that ends when the tile's list is exhausted or every pixel has stopped; within a batch
the transmittances come from a cumulative product, so there is no per-Gaussian loop.

Memory model. The forward pass keeps nothing per (pixel, Gaussian) pair: only the
per-pixel final transmittance and the index of the last included Gaussian ([C, T, P]
each), the number of batches each tile used, and the inputs. The backward pass walks
each tile's batches back to front, recovering the transmittance in front of a batch by
dividing by the batch's product of (1 - alpha) (bounded below by 1e-4, so the division
is safe), recomputes the batch and differentiates it locally. Per-entry gradients are
written into a [C, T, capacity, F] buffer and scatter-added to the Gaussians once.
Peak temporary memory is therefore O(C * T * batch_size * P) per loop step, independent
of the number of Gaussians and of the tile capacity.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from t4a_jax.render.projection import ALPHA_THRESHOLD

MAX_ALPHA = 0.99
TRANSMITTANCE_EPS = 1e-4

# Feature layout of one projected Gaussian, the last axis of `features` [C, N, F].
MEAN_X, MEAN_Y, CONIC_A, CONIC_B, CONIC_C, OPACITY = range(6)
VALUES = slice(6, None)     # what gets composited: rgb then depth


def pixel_centres(tiles_x: int, tiles_y: int, tile_size: int, dtype) -> jax.Array:
    """Pixel centres [T, P, 2] (x, y) of every tile, P = tile_size^2, row-major tiles."""
    local = jnp.arange(tile_size, dtype=dtype)
    ly, lx = jnp.meshgrid(local, local, indexing="ij")
    ty, tx = jnp.meshgrid(jnp.arange(tiles_y, dtype=dtype), jnp.arange(tiles_x, dtype=dtype),
                          indexing="ij")
    x = tx.reshape(-1, 1) * tile_size + lx.reshape(1, -1) + 0.5
    y = ty.reshape(-1, 1) * tile_size + ly.reshape(1, -1) + 0.5
    return jnp.stack([x, y], axis=-1)


def _alphas(feats: jax.Array, pixels: jax.Array) -> jax.Array:
    """alpha [B, P] of a batch of Gaussians `feats` [B, F] at pixel centres [P, 2]."""
    dx = pixels[None, :, 0] - feats[:, MEAN_X, None]
    dy = pixels[None, :, 1] - feats[:, MEAN_Y, None]
    power = (0.5 * (feats[:, CONIC_A, None] * dx * dx + feats[:, CONIC_C, None] * dy * dy)
             + feats[:, CONIC_B, None] * dx * dy)
    alpha = jnp.minimum(MAX_ALPHA, feats[:, OPACITY, None] * jnp.exp(-power))
    return jnp.where(power >= 0.0, alpha, 0.0)


def _blend(feats: jax.Array, pixels: jax.Array, include: jax.Array,
           t_in: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Composite one batch given which (Gaussian, pixel) pairs are included.

    Returns the batch's contribution [P, V] and the transmittance behind it [P].
    """
    alpha = jnp.where(include, _alphas(feats, pixels), 0.0)
    one_minus = 1.0 - alpha
    through = jnp.cumprod(one_minus, axis=0)
    in_front = jnp.concatenate([jnp.ones_like(through[:1]), through[:-1]], axis=0)
    weights = alpha * in_front * t_in[None, :]
    return weights.T @ feats[:, VALUES], t_in * through[-1]


def _tile_forward(features: jax.Array, ids: jax.Array, count: jax.Array,
                  pixels: jax.Array, batch_size: int):
    """One tile: (accumulated values [P, V], final T [P], last included [P], batches)."""
    num_pixels = pixels.shape[0]
    num_values = features.shape[-1] - OPACITY - 1
    dtype = features.dtype
    offsets = jnp.arange(batch_size, dtype=jnp.int32)

    def cond(state):
        batch, _, _, done, _ = state
        return (batch * batch_size < count) & ~jnp.all(done)

    def body(state):
        batch, t, acc, done, last = state
        start = batch * batch_size
        entry = start + offsets
        feats = features[jax.lax.dynamic_slice(ids, (start,), (batch_size,))]
        alpha = _alphas(feats, pixels)
        live = (alpha >= ALPHA_THRESHOLD) & (entry < count)[:, None]
        # Transmittance behind each Gaussian if every live one were taken: monotone, so
        # the pixel's stop (first T <= 1e-4) splits the batch into a prefix and the rest.
        behind = t[None, :] * jnp.cumprod(jnp.where(live, 1.0 - alpha, 1.0), axis=0)
        stops = live & (behind <= TRANSMITTANCE_EPS)
        include = live & ~stops & ~done[None, :]
        contribution, t_next = _blend(feats, pixels, include, t)
        last = jnp.maximum(last, jnp.max(jnp.where(include, entry[:, None], -1), axis=0))
        done = done | jnp.any(stops, axis=0)
        return batch + 1, t_next, acc + contribution, done, last

    init = (jnp.int32(0), jnp.ones(num_pixels, dtype), jnp.zeros((num_pixels, num_values), dtype),
            jnp.zeros(num_pixels, bool), jnp.full(num_pixels, -1, jnp.int32))
    batches, t, acc, _, last = jax.lax.while_loop(cond, body, init)
    return acc, t, last, batches


def _tile_backward(features: jax.Array, ids: jax.Array, count: jax.Array,
                   pixels: jax.Array, t_final: jax.Array, last: jax.Array,
                   batches: jax.Array, grad_acc: jax.Array, grad_t: jax.Array,
                   batch_size: int, capacity: int) -> jax.Array:
    """One tile, back to front: gradients [capacity, F] for its list entries."""
    offsets = jnp.arange(batch_size, dtype=jnp.int32)

    def body(i, state):
        t_behind, grad_t_behind, grad_entries = state
        start = ((batches - 1 - i) * batch_size).astype(jnp.int32)
        entry = start + offsets
        feats = features[jax.lax.dynamic_slice(ids, (start,), (batch_size,))]
        alpha = _alphas(feats, pixels)
        include = ((alpha >= ALPHA_THRESHOLD) & (entry < count)[:, None]
                   & (entry[:, None] <= last[None, :]))
        ratio = jnp.prod(jnp.where(include, 1.0 - alpha, 1.0), axis=0)
        t_front = t_behind / ratio
        _, vjp = jax.vjp(lambda f, t: _blend(f, pixels, include, t), feats, t_front)
        grad_feats, grad_t_front = vjp((grad_acc, grad_t_behind))
        grad_entries = jax.lax.dynamic_update_slice(grad_entries, grad_feats, (start, jnp.int32(0)))
        return t_front, grad_t_front, grad_entries

    grad_entries = jnp.zeros((capacity, features.shape[-1]), features.dtype)
    _, _, grad_entries = jax.lax.fori_loop(0, batches, body, (t_final, grad_t, grad_entries))
    return grad_entries


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def composite(features: jax.Array, ids: jax.Array, counts: jax.Array, pixels: jax.Array,
              batch_size: int, capacity: int) -> tuple[jax.Array, jax.Array]:
    """Composite every tile of every camera.

    Args:
      features: [C, N, F] projected Gaussians (see the layout constants above).
      ids: [C, T, capacity] int32 per-tile Gaussian lists, nearest first.
      counts: [C, T] int32 valid entries per list.
      pixels: [T, P, 2] pixel centres of every tile.
    Returns:
      (values [C, T, P, V], transmittance [C, T, P]).
    """
    out, _ = _composite_fwd(features, ids, counts, pixels, batch_size, capacity)
    return out


def _composite_fwd(features, ids, counts, pixels, batch_size, capacity):
    tile_fn = functools.partial(_tile_forward, batch_size=batch_size)
    per_tile = jax.vmap(tile_fn, in_axes=(None, 0, 0, 0))
    acc, t, last, batches = jax.vmap(per_tile, in_axes=(0, 0, 0, None))(
        features, ids, counts, pixels)
    return (acc, t), (features, ids, counts, pixels, t, last, batches)


def _composite_bwd(batch_size, capacity, residuals, cotangents):
    features, ids, counts, pixels, t, last, batches = residuals
    grad_acc, grad_t = cotangents
    tile_fn = functools.partial(_tile_backward, batch_size=batch_size, capacity=capacity)
    per_tile = jax.vmap(tile_fn, in_axes=(None, 0, 0, 0, 0, 0, 0, 0, 0))
    grad_entries = jax.vmap(per_tile, in_axes=(0, 0, 0, None, 0, 0, 0, 0, 0))(
        features, ids, counts, pixels, t, last, batches, grad_acc, grad_t)
    num_cameras, num_gaussians, num_features = features.shape
    camera = jnp.arange(num_cameras)[:, None, None]
    grad_features = jnp.zeros((num_cameras, num_gaussians, num_features), features.dtype)
    grad_features = grad_features.at[camera, ids].add(grad_entries)
    return grad_features, None, None, None


composite.defvjp(_composite_fwd, _composite_bwd)
