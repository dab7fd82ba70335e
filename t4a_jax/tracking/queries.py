"""Query points for the tracking losses (paper Sec. 3.2): from the 15x15 grid of each
view's first frame (those on the object, `query_valid`), draw `num_points` per view per
step, uniformly without replacement, with static shapes.

Shapes: B objects, V views, F frames, N grid queries, P drawn points.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

POINTS_PER_VIEW = 8


class DrawnPoints(NamedTuple):
    """The tracks of the drawn points.

    tracks:  [B, V, F, P, 2] (x, y) pixels, +0.5 pixel-centre convention.
    visible: [B, V, F, P] bool: the point is valid (drawn from a valid query; views with
             fewer than P valid queries pad with invalid ones) and the tracker sees it at
             that frame.
    """

    tracks: jax.Array
    visible: jax.Array


def draw_points(key: jax.Array, query_valid: jax.Array, tracks: jax.Array,
                visibility: jax.Array, num_points: int = POINTS_PER_VIEW) -> DrawnPoints:
    """Draw `num_points` of the valid queries of every view (uniformly, without
    replacement; a view with fewer takes them all and pads with invalid points).

    query_valid [B, V, N] bool, tracks [B, V, F, N, 2], visibility [B, V, F, N] bool.
    """
    b, v, n = query_valid.shape
    if num_points > n:
        raise ValueError(f"num_points {num_points} exceeds the {n} queries per view")
    scores = jax.random.uniform(key, (b, v, n))
    scores = jnp.where(query_valid, scores, -1.0)          # invalid ones sort last
    _, index = jax.lax.top_k(scores, num_points)           # [B, V, P]
    drawn_valid = jnp.take_along_axis(query_valid, index, axis=-1)
    gather = lambda x: jnp.take_along_axis(x, index[:, :, None, :], axis=3)
    drawn_tracks = jnp.take_along_axis(tracks, index[:, :, None, :, None], axis=3)
    visible = gather(visibility) & drawn_valid[:, :, None, :]
    return DrawnPoints(drawn_tracks, visible)
