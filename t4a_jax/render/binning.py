"""Tile binning with static shapes: which Gaussians touch which tile, nearest first.

The image is cut into `tile_size` x `tile_size` tiles (the last row/column of tiles may
hang over the image border). A Gaussian touches every tile that holds a pixel centre
inside its opacity-aware box (see `projection`). As in gsplat, every (tile, Gaussian)
pair is written to a buffer, the buffer is sorted by (tile, depth), and each tile reads
its run. Here every size is static: the buffer holds `num_tiles * capacity` pairs and
each tile keeps at most `capacity` Gaussians, the nearest ones. The exact number of
pairs that did not fit is returned as `overflow` (computed independently of the buffer
with a 2-D difference array), so a caller can always tell an exact image (overflow 0)
from a truncated one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from t4a_jax.render.projection import Projected


class TileBins(NamedTuple):
    """Per-tile Gaussian lists for one camera."""

    ids: jax.Array        # [T, capacity] int32 Gaussian indices, nearest first
    counts: jax.Array     # [T] int32 valid entries of `ids` (<= capacity)
    overflow: jax.Array   # [] int32 pairs dropped because a tile was full
    max_count: jax.Array  # [] int32 the largest number of Gaussians on any tile


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """Number of tiles (tiles_x, tiles_y) covering a width x height image."""
    return -(-width // tile_size), -(-height // tile_size)


def pixel_ranges(proj: Projected, width: int, height: int) -> tuple[jax.Array, jax.Array]:
    """Inclusive pixel index ranges [N, 2] (x, y) lo and hi whose centres lie in each box.

    Culled Gaussians get an empty range (lo > hi).
    """
    size = jnp.array([width, height], jnp.int32)
    lo = jnp.ceil(proj.means2d - proj.radii - 0.5).astype(jnp.int32)
    hi = jnp.floor(proj.means2d + proj.radii - 0.5).astype(jnp.int32)
    lo = jnp.clip(lo, 0, size)
    hi = jnp.clip(hi, -1, size - 1)
    hi = jnp.where(proj.valid[:, None], hi, lo - 1)
    return lo, hi


def bin_gaussians(proj: Projected, width: int, height: int, tile_size: int,
                  capacity: int) -> TileBins:
    """Sort one camera's Gaussians into depth-ordered per-tile lists of static length."""
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    num_tiles = tiles_x * tiles_y
    num_gaussians = proj.depths.shape[0]

    lo, hi = pixel_ranges(proj, width, height)
    tile_lo = lo // tile_size
    tile_hi = jnp.where(hi >= lo, hi // tile_size, tile_lo - 1)
    span = jnp.maximum(tile_hi - tile_lo + 1, 0)             # [N, 2] tiles in x and y
    pairs_per_gaussian = span[:, 0] * span[:, 1]

    # Pairs are emitted nearest Gaussian first, so one stable sort by tile leaves every
    # tile's run in depth order (and a full buffer drops the farthest pairs).
    depth = jnp.where(pairs_per_gaussian > 0, jax.lax.stop_gradient(proj.depths), jnp.inf)
    by_depth = jnp.argsort(depth, stable=True).astype(jnp.int32)
    pairs_by_depth = pairs_per_gaussian[by_depth]
    ends = jnp.cumsum(pairs_by_depth)
    starts = ends - pairs_by_depth
    buffer_size = num_tiles * capacity
    slot = jnp.arange(buffer_size, dtype=jnp.int32)
    rank = jnp.repeat(jnp.arange(num_gaussians, dtype=jnp.int32), pairs_by_depth,
                      total_repeat_length=buffer_size)
    gaussian = by_depth[rank]
    local = slot - starts[rank]
    width_in_tiles = jnp.maximum(span[gaussian, 0], 1)
    tile_x = tile_lo[gaussian, 0] + local % width_in_tiles
    tile_y = tile_lo[gaussian, 1] + local // width_in_tiles
    tile = jnp.where(slot < ends[-1], tile_y * tiles_x + tile_x, num_tiles)
    tile, gaussian = jax.lax.sort((tile, gaussian), num_keys=1, is_stable=True)

    tile_ids = jnp.arange(num_tiles, dtype=jnp.int32)
    run_start = jnp.searchsorted(tile, tile_ids, side="left", method="scan")
    run_end = jnp.searchsorted(tile, tile_ids, side="right", method="scan")
    counts = jnp.minimum(run_end - run_start, capacity).astype(jnp.int32)
    index = jnp.minimum(run_start[:, None] + jnp.arange(capacity), buffer_size - 1)
    ids = gaussian[index]

    exact = _pairs_per_tile(tile_lo, tile_hi, span, tiles_x, tiles_y)
    overflow = jnp.sum(jnp.maximum(exact - capacity, 0)).astype(jnp.int32)
    return TileBins(ids, counts, overflow, jnp.max(exact).astype(jnp.int32))


def _pairs_per_tile(tile_lo: jax.Array, tile_hi: jax.Array, span: jax.Array,
                    tiles_x: int, tiles_y: int) -> jax.Array:
    """Exact number of Gaussians per tile [T] by a 2-D difference array over the boxes."""
    touches = (span[:, 0] > 0) & (span[:, 1] > 0)
    weight = touches.astype(jnp.int32)
    x0, y0 = tile_lo[:, 0], tile_lo[:, 1]
    x1, y1 = tile_hi[:, 0] + 1, tile_hi[:, 1] + 1
    grid = jnp.zeros((tiles_y + 1, tiles_x + 1), jnp.int32)
    grid = grid.at[y0, x0].add(weight, mode="drop")
    grid = grid.at[y0, x1].add(-weight, mode="drop")
    grid = grid.at[y1, x0].add(-weight, mode="drop")
    grid = grid.at[y1, x1].add(weight, mode="drop")
    counts = jnp.cumsum(jnp.cumsum(grid, axis=0), axis=1)
    return counts[:tiles_y, :tiles_x].reshape(-1)
