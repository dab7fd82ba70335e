"""Front-to-back alpha compositing of depth-sorted tile lists, with a recomputing VJP.

Per pixel p of a tile and Gaussian i of the tile's list (nearest first):
    power_i = 0.5 (a dx^2 + c dy^2) + b dx dy,   d = pixel centre - mean2d_i
    alpha_i = min(0.99, o_i exp(-power_i)),      skipped when alpha_i < 1/255
    T_i     = prod_{j < i, j included} (1 - alpha_j)
    out     = sum_i alpha_i T_i v_i              v = (r, g, b, depth)
and the pixel stops before the first Gaussian that would bring T to 1e-4 or below.
`conic_power` and `splat_alpha` are the one home of power_i and alpha_i: code that
re-evaluates the compositing elsewhere (`render.visibility`) calls them.

The work is done in batches of `batch_size` list entries with a `while_loop` per tile
that ends when the tile's list is exhausted or every pixel has stopped. Within a batch
the prefix products of (1 - alpha) are exp of prefix sums of log(1 - alpha), taken as a
[B, B] triangular matrix product (no per-Gaussian loop, and a matmul on accelerators).

Memory model. The forward pass keeps nothing per (pixel, Gaussian) pair: only the
per-pixel final transmittance and the index of the last included Gaussian ([C, T, P]
each), the number of batches each tile used, and the inputs. The backward pass walks
each tile's batches back to front, as the CUDA rasterizers do: it recovers the
transmittance in front of a batch by dividing by the batch's product of (1 - alpha)
(at least 1e-4, since a pixel never passes that floor), recomputes the batch's alphas and
applies the closed-form gradient of the compositing sum. Tiles run in chunks (see
`_schedule`); a chunk's per-entry gradients [chunk, capacity, F] are scatter-added into
the [C * N, F] gradient before the next chunk runs. Peak temporary memory is
O(chunk * batch_size * P + chunk * capacity) per step in both passes, plus O(C * T * P)
per-pixel state and O(C * N) gradients: independent of the number of Gaussians per
pixel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from t4a_jax.render.projection import ALPHA_THRESHOLD

MAX_ALPHA = 0.99            # alphas are clamped here, so (1 - alpha) never vanishes
TRANSMITTANCE_EPS = 1e-4

# Feature layout of one projected Gaussian, the last axis of `features` [C, N, F].
MEAN_X, MEAN_Y, CONIC_A, CONIC_B, CONIC_C, OPACITY = range(6)
VALUES = slice(6, None)     # what gets composited: rgb then depth

_HIGHEST = jax.lax.Precision.HIGHEST
Array = jax.Array | np.ndarray


def conic_power(conics: Array, dx: Array, dy: Array) -> Array:
    """The Gaussian exponent `0.5 (a dx^2 + c dy^2) + b dx dy` of conics (a, b, c) (the
    last axis of `conics` [..., 3]) at offsets dx, dy (pixel - mean2d), broadcast
    together; NumPy or JAX arrays alike."""
    a, b, c = conics[..., 0], conics[..., 1], conics[..., 2]
    return 0.5 * (a * dx ** 2 + c * dy ** 2) + b * dx * dy


def splat_alpha(opacity: Array, power: Array) -> Array:
    """The alpha `min(MAX_ALPHA, opacity exp(-power))` of a Gaussian with exponent
    `power` (`conic_power`), broadcast together; NumPy in, NumPy out, else JAX. The
    compositor skips alphas below `ALPHA_THRESHOLD`."""
    xp = jnp if isinstance(opacity, jax.Array) or isinstance(power, jax.Array) else np
    return xp.minimum(MAX_ALPHA, opacity * xp.exp(-power))


def pixel_centres(tiles_x: int, tiles_y: int, tile_size: int, dtype) -> jax.Array:
    """Pixel centres [T, P, 2] (x, y) of every tile, P = tile_size^2, row-major tiles."""
    local = jnp.arange(tile_size, dtype=dtype)
    ly, lx = jnp.meshgrid(local, local, indexing="ij")
    ty, tx = jnp.meshgrid(jnp.arange(tiles_y, dtype=dtype), jnp.arange(tiles_x, dtype=dtype),
                          indexing="ij")
    x = tx.reshape(-1, 1) * tile_size + lx.reshape(1, -1) + 0.5
    y = ty.reshape(-1, 1) * tile_size + ly.reshape(1, -1) + 0.5
    return jnp.stack([x, y], axis=-1)


class _Batch:
    """One batch of B Gaussians `feats` [B, F] against one tile's pixels [P, 2]."""

    def __init__(self, feats: jax.Array, pixels: jax.Array, valid: jax.Array):
        self.feats = feats
        self.dx = pixels[None, :, 0] - feats[:, MEAN_X, None]
        self.dy = pixels[None, :, 1] - feats[:, MEAN_Y, None]
        self.power = conic_power(feats[:, None, CONIC_A:CONIC_C + 1], self.dx, self.dy)
        self.gauss = jnp.exp(-self.power)
        self.clamped = feats[:, OPACITY, None] * self.gauss > MAX_ALPHA
        self.alpha = splat_alpha(feats[:, OPACITY, None], self.power)
        self.live = (self.alpha >= ALPHA_THRESHOLD) & (self.power >= 0.0) & valid[:, None]
        self.log_pass = jnp.log1p(-self.alpha)     # log(1 - alpha), alpha <= 0.99

    def prefix_log_pass(self, include: jax.Array) -> jax.Array:
        """sum over j < i of log(1 - alpha_j) for included j, [B, P]."""
        b = include.shape[0]
        tri = jnp.tril(jnp.ones((b, b), self.alpha.dtype), k=-1)
        return jnp.matmul(tri, jnp.where(include, self.log_pass, 0.0), precision=_HIGHEST)


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
        entry = batch * batch_size + offsets
        feats = features[jax.lax.dynamic_slice(ids, (batch * batch_size,), (batch_size,))]
        g = _Batch(feats, pixels, entry < count)
        # Transmittance in front of each Gaussian if every live one were taken. It is
        # monotone, so the pixel's stop (the first T <= 1e-4 behind a Gaussian) splits
        # the batch into a taken prefix, on which it equals the true transmittance.
        in_front = t[None, :] * jnp.exp(g.prefix_log_pass(g.live))
        stops = g.live & (in_front * (1.0 - g.alpha) <= TRANSMITTANCE_EPS)
        include = g.live & ~stops & ~done[None, :]
        weights = jnp.where(include, g.alpha * in_front, 0.0)
        acc = acc + jnp.matmul(weights.T, feats[:, VALUES], precision=_HIGHEST)
        t = t * jnp.exp(jnp.sum(jnp.where(include, g.log_pass, 0.0), axis=0))
        last = jnp.maximum(last, jnp.max(jnp.where(include, entry[:, None], -1), axis=0))
        done = done | jnp.any(stops, axis=0)
        return batch + 1, t, acc, done, last

    init = (jnp.int32(0), jnp.ones(num_pixels, dtype), jnp.zeros((num_pixels, num_values), dtype),
            jnp.zeros(num_pixels, bool), jnp.full(num_pixels, -1, jnp.int32))
    batches, t, acc, _, last = jax.lax.while_loop(cond, body, init)
    return acc, t, last, batches


def _tile_backward(features: jax.Array, ids: jax.Array, count: jax.Array,
                   pixels: jax.Array, t_final: jax.Array, last: jax.Array,
                   batches: jax.Array, grad_acc: jax.Array, grad_t: jax.Array,
                   batch_size: int, capacity: int) -> jax.Array:
    """One tile, back to front: gradients [capacity, F] for its list entries.

    For a batch with transmittance t_front in front, local prefix products P_i and
    out = sum_i a_i t_front P_i v_i + (behind) * t_front P_B, with cotangents g [P, V] for
    the values and g_T for the transmittance behind the batch:
        dL/dv_i     = sum_p w_i g,                    w_i = a_i t_front P_i
        dL/da_i     = t_front P_i (g . v_i) - S_i / (1 - a_i),
        S_i         = sum_{j > i} w_j (g . v_j) + g_T T_behind
        dL/dt_front = sum_i a_i P_i (g . v_i) + g_T P_B
    then alpha -> (opacity, power) -> (mean2d, conic) by the chain rule.
    """
    offsets = jnp.arange(batch_size, dtype=jnp.int32)
    dtype = features.dtype
    strictly_upper = jnp.triu(jnp.ones((batch_size, batch_size), dtype), k=1)

    def body(i, state):
        t_behind, grad_t_behind, grad_entries = state
        start = ((batches - 1 - i) * batch_size).astype(jnp.int32)
        entry = start + offsets
        feats = features[jax.lax.dynamic_slice(ids, (start,), (batch_size,))]
        g = _Batch(feats, pixels, entry < count)
        include = g.live & (entry[:, None] <= last[None, :])
        alpha = jnp.where(include, g.alpha, 0.0)
        local_through = jnp.exp(jnp.sum(jnp.where(include, g.log_pass, 0.0), axis=0))
        local_front = jnp.exp(g.prefix_log_pass(include))      # P_i
        t_front = t_behind / local_through
        g_dot_v = jnp.matmul(feats[:, VALUES], grad_acc.T, precision=_HIGHEST)  # [B, P]
        weights = alpha * local_front * t_front[None, :]
        grad_values = jnp.matmul(weights, grad_acc, precision=_HIGHEST)          # [B, V]
        later = (jnp.matmul(strictly_upper, weights * g_dot_v, precision=_HIGHEST)
                 + (grad_t_behind * t_behind)[None, :])
        grad_alpha = local_front * t_front[None, :] * g_dot_v - later / (1.0 - alpha)
        grad_alpha = jnp.where(include & ~g.clamped, grad_alpha, 0.0)
        grad_power = -grad_alpha * alpha
        grad_opacity = jnp.sum(grad_alpha * g.gauss, axis=1)
        grad_mean_x = -jnp.sum(grad_power * (feats[:, CONIC_A, None] * g.dx
                                             + feats[:, CONIC_B, None] * g.dy), axis=1)
        grad_mean_y = -jnp.sum(grad_power * (feats[:, CONIC_C, None] * g.dy
                                             + feats[:, CONIC_B, None] * g.dx), axis=1)
        grad_a = 0.5 * jnp.sum(grad_power * g.dx ** 2, axis=1)
        grad_b = jnp.sum(grad_power * g.dx * g.dy, axis=1)
        grad_c = 0.5 * jnp.sum(grad_power * g.dy ** 2, axis=1)
        grad_feats = jnp.concatenate(
            [jnp.stack([grad_mean_x, grad_mean_y, grad_a, grad_b, grad_c, grad_opacity], -1),
             grad_values], axis=-1)
        grad_entries = jax.lax.dynamic_update_slice(grad_entries, grad_feats,
                                                    (start, jnp.int32(0)))
        grad_t_front = (jnp.sum(alpha * local_front * g_dot_v, axis=0)
                        + grad_t_behind * local_through)
        return t_front, grad_t_front, grad_entries

    grad_entries = jnp.zeros((capacity, features.shape[-1]), dtype)
    _, _, grad_entries = jax.lax.fori_loop(0, batches, body, (t_final, grad_t, grad_entries))
    return grad_entries


def _schedule(work: jax.Array, chunk: int, *operands: jax.Array):
    """Group W work items into chunks of `chunk`, heaviest first.

    Each chunk's loops run only as long as its own heaviest item, so light tiles (empty
    background, early-stopping interiors) do not wait for the heaviest tile of the
    image. `work` [W] is the expected loop length per item; every operand has the W
    items on axis 0. Returns the order [W'] (W' a multiple of `chunk`, padding slots
    index W) and the operands gathered into [W' / chunk, chunk, ...]; padding slots are
    all zeros, i.e. empty tiles whose loops do not run.
    """
    num_items = work.shape[0]
    order = jnp.argsort(-work, stable=True)
    order = jnp.concatenate([order, jnp.full((-num_items % chunk,), num_items, order.dtype)])

    def arrange(x):
        x = jnp.take(x, order, axis=0, mode="fill", fill_value=0)
        return x.reshape((-1, chunk) + x.shape[1:])

    return order, tuple(map(arrange, operands))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def composite(features: jax.Array, ids: jax.Array, counts: jax.Array, pixels: jax.Array,
              batch_size: int, capacity: int, chunk: int) -> tuple[jax.Array, jax.Array]:
    """Composite every tile of every camera.

    Args:
      features: [C, N, F] projected Gaussians (see the layout constants above).
      ids: [C, T, capacity] int32 per-tile Gaussian lists, nearest first.
      counts: [C, T] int32 valid entries per list.
      pixels: [T, P, 2] pixel centres of every tile.
      batch_size: Gaussians per loop step (capacity must be a multiple of it).
      capacity: length of every tile list.
      chunk: tiles processed side by side (see `_schedule`).
    Returns:
      (values [C, T, P, V], transmittance [C, T, P]).
    """
    out, _ = _composite_fwd(features, ids, counts, pixels, batch_size, capacity, chunk)
    return out


def _work_items(features, ids, pixels):
    """Flatten (camera, tile) into work items indexing one [C * N, F] feature table."""
    num_cameras, num_gaussians, num_features = features.shape
    num_tiles = ids.shape[1]
    offsets = (jnp.arange(num_cameras, dtype=ids.dtype) * num_gaussians)[:, None, None]
    flat_ids = (ids + offsets).reshape(num_cameras * num_tiles, -1)
    flat_pixels = jnp.broadcast_to(pixels, (num_cameras,) + pixels.shape).reshape(
        (num_cameras * num_tiles,) + pixels.shape[1:])
    return features.reshape(-1, num_features), flat_ids, flat_pixels


def _composite_fwd(features, ids, counts, pixels, batch_size, capacity, chunk):
    table, flat_ids, flat_pixels = _work_items(features, ids, pixels)
    flat_counts = counts.reshape(-1)
    tile_fn = jax.vmap(functools.partial(_tile_forward, table, batch_size=batch_size))
    order, chunks = _schedule(flat_counts, chunk, flat_ids, flat_counts, flat_pixels)
    outputs = jax.lax.map(lambda xs: tile_fn(*xs), chunks)

    def restore(y):
        y = y.reshape((-1,) + y.shape[2:])
        return jnp.zeros((flat_counts.shape[0],) + y.shape[1:], y.dtype).at[order].set(
            y, mode="drop")

    acc, t, last, batches = map(restore, outputs)
    shape = counts.shape
    out = (acc.reshape(shape + acc.shape[1:]), t.reshape(shape + t.shape[1:]))
    return out, (features, ids, counts, pixels, t, last, batches)


def _composite_bwd(batch_size, capacity, chunk, residuals, cotangents):
    features, ids, counts, pixels, t, last, batches = residuals
    grad_acc, grad_t = cotangents
    table, flat_ids, flat_pixels = _work_items(features, ids, pixels)
    tile_fn = jax.vmap(functools.partial(_tile_backward, table, batch_size=batch_size,
                                         capacity=capacity))
    _, chunks = _schedule(batches, chunk, flat_ids, counts.reshape(-1), flat_pixels, t,
                          last, batches, grad_acc.reshape((-1,) + grad_acc.shape[2:]),
                          grad_t.reshape((-1,) + grad_t.shape[2:]))

    def accumulate(grad_table, xs):
        # Per-entry gradients [chunk, capacity, F] exist for one chunk at a time.
        return grad_table.at[xs[0]].add(tile_fn(*xs)), None

    grad_table, _ = jax.lax.scan(accumulate, jnp.zeros_like(table), chunks)
    return grad_table.reshape(features.shape), None, None, None


composite.defvjp(_composite_fwd, _composite_bwd)
