"""The HexPlane motion features of Stage Two (paper Sec. 3.3, Appendix A; K-Planes /
4DGaussians), as a pytree and pure functions.

    field = init_hexplane(key, canonical.means, HexPlaneConfig())
    features = hexplane_features(field, means, tau)          # [N, C * num_scales]

Six planes per scale, one for every pair of the axes (x, y, z, t) in the order
`PLANE_AXES` = xy, xz, xt, yz, yt, zt; plane (i, j) is an array [R_i, R_j, C] indexed by
the grid position along axis i, then along axis j. At a point, each plane is sampled
bilinearly at its two coordinates, the six samples of a scale are multiplied, and the
scales are concatenated. Spatial planes (xy, xz, yz) start uniform in [0.1, 0.5], time
planes (xt, yt, zt) at 1, so at initialisation the feature does not depend on time.

Coordinates. xyz is normalised by the field's box, `2 (x - lower) / (upper - lower) - 1`,
the box being the canonical points' bounds widened by `margin` times their extent on
every side (stored in the field, so the field is usable alone). Time tau in [0, 1] (the
first frame at 0, the last at 1) maps onto the whole plane axis, `2 tau - 1` (4DGaussians
uses only half of it: their issues 248/251). A normalised coordinate u in [-1, 1] lands
at grid position `(u + 1) / 2 (R - 1)` (grid_sample's align_corners=True); positions
outside the grid are clamped to its border.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
from flax import struct

PLANE_AXES = tuple(itertools.combinations(range(4), 2))   # (0,1) xy ... (2,3) zt
TIME_AXIS = 3


@dataclasses.dataclass(frozen=True)
class HexPlaneConfig:
    """Resolutions (x, y, z, t) of each scale and channels per plane (paper Appendix A:
    one scale [100, 100, 100, 8] with 16 channels; Animate3D: [50, 50, 50, 8] and
    [100, 100, 100, 16]); `margin`: box widening, a fraction of the points' extent."""

    resolutions: tuple[tuple[int, int, int, int], ...] = ((100, 100, 100, 8),)
    channels: int = 16
    margin: float = 0.1
    init_low: float = 0.1
    init_high: float = 0.5

    def __post_init__(self):
        for resolution in self.resolutions:
            if len(resolution) != 4 or min(resolution) < 2:
                raise ValueError(f"HexPlaneConfig: resolution {resolution} must be 4 sizes "
                                 f"(x, y, z, t) of at least 2")
        if self.channels < 1 or not self.resolutions:
            raise ValueError("HexPlaneConfig: needs at least one scale and one channel")

    @property
    def feature_dim(self) -> int:
        return self.channels * len(self.resolutions)


@struct.dataclass
class HexPlaneField:
    """planes: per scale a tuple of the six planes [R_i, R_j, C] (order `PLANE_AXES`);
    lower, upper [3]: the normalisation box of xyz."""

    planes: tuple[tuple[jax.Array, ...], ...]
    lower: jax.Array
    upper: jax.Array


def init_hexplane(key: jax.Array, points: jax.Array, config: HexPlaneConfig) -> HexPlaneField:
    """A field whose box holds `points` [N, 3] (with the margin); planes initialised as in
    the module docstring."""
    lo, hi = jnp.min(points, axis=0), jnp.max(points, axis=0)
    pad = config.margin * jnp.maximum(hi - lo, 1e-6)
    scales = []
    for resolution in config.resolutions:
        planes = []
        for i, j in PLANE_AXES:
            shape = (resolution[i], resolution[j], config.channels)
            if TIME_AXIS in (i, j):
                planes.append(jnp.ones(shape, jnp.float32))
            else:
                key, sub = jax.random.split(key)
                planes.append(jax.random.uniform(sub, shape, jnp.float32,
                                                 config.init_low, config.init_high))
        scales.append(tuple(planes))
    return HexPlaneField(tuple(scales), lo - pad, hi + pad)


def normalized_coordinates(field: HexPlaneField, points: jax.Array, tau: jax.Array
                           ) -> jax.Array:
    """[N, 4] coordinates in [-1, 1] of points [N, 3] at times tau (scalar or [N])."""
    xyz = 2.0 * (points - field.lower) / (field.upper - field.lower) - 1.0
    t = jnp.broadcast_to(2.0 * jnp.asarray(tau, points.dtype) - 1.0, points.shape[:1])
    return jnp.concatenate([xyz, t[:, None]], axis=-1)


def sample_plane(plane: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
    """Bilinear samples [N, C] of `plane` [R_u, R_v, C] at normalised coordinates u, v
    [N] (align_corners, border clamp: see the module docstring)."""
    ru, rv = plane.shape[:2]
    pu = jnp.clip((u + 1.0) * 0.5 * (ru - 1), 0.0, ru - 1)
    pv = jnp.clip((v + 1.0) * 0.5 * (rv - 1), 0.0, rv - 1)
    u0 = jnp.clip(jnp.floor(pu).astype(jnp.int32), 0, ru - 2)
    v0 = jnp.clip(jnp.floor(pv).astype(jnp.int32), 0, rv - 2)
    fu, fv = (pu - u0)[:, None], (pv - v0)[:, None]
    top = plane[u0, v0] * (1 - fv) + plane[u0, v0 + 1] * fv
    bottom = plane[u0 + 1, v0] * (1 - fv) + plane[u0 + 1, v0 + 1] * fv
    return top * (1 - fu) + bottom * fu


def hexplane_features(field: HexPlaneField, points: jax.Array, tau: jax.Array) -> jax.Array:
    """Features [N, C * num_scales] of points [N, 3] at times tau (scalar or [N])."""
    coords = normalized_coordinates(field, points, tau)
    out = []
    for planes in field.planes:
        product = 1.0
        for (i, j), plane in zip(PLANE_AXES, planes):
            product = product * sample_plane(plane, coords[:, i], coords[:, j])
        out.append(product)
    return jnp.concatenate(out, axis=-1)


def plane_total_variation(field: HexPlaneField) -> jax.Array:
    """Mean squared first difference along both axes of every plane, averaged over the
    planes: a smoothness regulariser (K-Planes' TV term)."""
    terms = []
    for planes in field.planes:
        for plane in planes:
            terms.append(jnp.mean(jnp.square(jnp.diff(plane, axis=0)))
                         + jnp.mean(jnp.square(jnp.diff(plane, axis=1))))
    return jnp.mean(jnp.stack(terms))


def time_smoothness(field: HexPlaneField) -> jax.Array:
    """Mean squared second difference along the time axis of the time planes (xt, yt,
    zt), averaged over them: motion that changes smoothly in time."""
    terms = [jnp.mean(jnp.square(jnp.diff(plane, n=2, axis=1)))
             for planes in field.planes for (i, j), plane in zip(PLANE_AXES, planes)
             if j == TIME_AXIS and plane.shape[1] > 2]
    return jnp.mean(jnp.stack(terms)) if terms else jnp.zeros(())
