"""As-rigid-as-possible regularisation of Stage Two (Animate3D's ARAP term).

    neighbours = nearest_neighbours(canonical.means, k=3)             # [N, 3] indices
    loss = arap_loss(canonical.means, deformed.means, neighbours, anchors)

For an anchor a with neighbours j: P = x_j - x_a in the canonical pose, Q = y_j - y_a in
the deformed one; the best rotation R_a (Kabsch: P -> Q in the least-squares sense, a
proper rotation) is fitted without gradient, and the loss is the mean of
|Q - R_a P|^2 over anchors and neighbours: zero for any rigid motion, positive for a
stretch or shear.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def nearest_neighbours(points: jax.Array, k: int = 3, block: int = 512) -> jax.Array:
    """Indices [N, k] of each point's k nearest other points (points [N, 3]; exact, by
    blocks of `block` rows of the distance matrix)."""
    n = points.shape[0]
    if not 0 < k < n:
        raise ValueError(f"nearest_neighbours: k={k} for {n} points")
    pad = -n % block
    rows = jnp.pad(points, ((0, pad), (0, 0))).reshape(-1, block, 3)
    offsets = jnp.arange(rows.shape[0]) * block

    def one(args):
        chunk, offset = args
        d = jnp.sum(jnp.square(chunk[:, None] - points[None]), axis=-1)      # [block, N]
        d = d.at[jnp.arange(block), offset + jnp.arange(block)].set(jnp.inf,
                                                                   mode="drop")
        return jax.lax.top_k(-d, k)[1]

    return jax.lax.map(one, (rows, offsets)).reshape(-1, k)[:n]


def kabsch(p: jax.Array, q: jax.Array) -> jax.Array:
    """Rotations R [..., 3, 3] minimising sum_j |R p_j - q_j|^2 over point sets p, q
    [..., M, 3] (taken as they are, not re-centred), with det R = +1 (a reflection is
    turned into the best proper rotation)."""
    h = jnp.einsum("...mi,...mj->...ij", p, q)
    u, _, vt = jnp.linalg.svd(h)
    d = jnp.sign(jnp.linalg.det(jnp.einsum("...ji,...kj->...ik", vt, u)))
    fix = jnp.concatenate([jnp.ones(d.shape + (2,), d.dtype), d[..., None]], axis=-1)
    return jnp.einsum("...ji,...j,...kj->...ik", vt, fix, u)


def arap_loss(canonical: jax.Array, deformed: jax.Array, neighbours: jax.Array,
              anchors: jax.Array) -> jax.Array:
    """The ARAP term (module docstring) of anchors [M] (indices), points [N, 3] in both
    poses, neighbours [N, k]."""
    nbrs = neighbours[anchors]                                             # [M, k]
    p = canonical[nbrs] - canonical[anchors][:, None]
    q = deformed[nbrs] - deformed[anchors][:, None]
    rotation = jax.lax.stop_gradient(kabsch(p, q))
    fitted = jnp.einsum("mij,mkj->mki", rotation, p)
    return jnp.mean(jnp.sum(jnp.square(q - fitted), axis=-1))
