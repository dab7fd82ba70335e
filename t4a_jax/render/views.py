"""The one renderer of a set of views: Gaussians seen from C cameras, with the tile
capacity handled for the caller.

    views = ring_views(4, elevation=15.0, size=256)            # the Animate3D ring
    renderer = ViewRenderer(256, 256, overflow="grow")
    out = renderer(gaussians, views.viewmats, views.Ks)        # ViewRender
    out.colors                                                 # [C, H, W, 3] in [0, 1]

Every image the package writes or feeds a network (condition renders, turntables,
synthetic MV-Video frames, Stage Two outputs) comes from `ViewRenderer`. It renders with
`t4a_jax.render.rasterize` (SH colours of the Gaussians' own degree) and returns host
arrays: colours clipped to [0, 1] over `background`, alphas and expected depths (camera
z, `meta["expected_depths"]`) [C, H, W].

Tile overflow (`rasterize` keeps at most `tile_capacity` Gaussians per 16x16 tile and
counts the rest): with `overflow="grow"` an image that overflowed is rendered again at
a capacity 15 % above what it needed (rounded up to 128), and the raised capacity is
kept for the following calls, so no image is ever cut short and a sequence of similar
frames compiles at most a few times; with `overflow="raise"` it is a
`TileOverflowError` naming the capacity that would have sufficed. A capacity above the
number of Gaussians cannot overflow, so it is never used.

Cameras are rendered `cameras_per_step` at a time by one compiled program (the last
chunk padded with copies of its last camera), all at once by default.

Conventions are those of `rasterize` and `cameras`: OpenCV world-to-camera `viewmats`,
intrinsics in pixels, Animate3D orbits (+z up) from `cameras.orbit_cameras`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike
from tqdm import tqdm

from t4a_jax.render.cameras import orbit_cameras
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.projection import FAR_PLANE, NEAR_PLANE
from t4a_jax.render.rasterize import rasterize

# The Animate3D condition renders (DESIGN.md): distance 3.0, fovy 40 degrees, grey 0.498.
ORBIT_DISTANCE = 3.0
ORBIT_FOVY = 40.0
GREY_BACKGROUND = 0.498
OVERFLOW_MODES = ("grow", "raise")
_GROWTH = 1.15          # a grown capacity: 15 % above the largest need ...
_GROWTH_MULTIPLE = 128  # ... rounded up to a multiple of this


class TileOverflowError(ValueError):
    """Gaussians overflowed a tile with `overflow="raise"`: `capacity` was used, `needed`
    would have sufficed; `views` are the indices of the views that overflowed."""

    def __init__(self, capacity: int, needed: int, views: np.ndarray, num_views: int):
        self.capacity, self.needed, self.views = capacity, needed, views
        super().__init__(f"tile_capacity={capacity} is too small; {needed} would suffice "
                         f"(Gaussians overflowed a tile in {len(views)} of {num_views} "
                         f"views, first: view {int(views[0])})")


class ViewSet(NamedTuple):
    """C cameras on an orbit, as host arrays: viewmats [C, 4, 4] (OpenCV world-to-camera),
    Ks [C, 3, 3] in pixels, c2w [C, 4, 4] (Animate3D camera-to-world), azimuths [C] in
    degrees."""

    viewmats: np.ndarray
    Ks: np.ndarray
    c2w: np.ndarray
    azimuths: np.ndarray


class ViewRender(NamedTuple):
    """Renders of C views: colors [C, H, W, 3] in [0, 1], alphas and expected depths
    (camera z; 0 where nothing is seen) [C, H, W], float32 host arrays."""

    colors: np.ndarray
    alphas: np.ndarray
    depths: np.ndarray


def ring_views(count: int, *, elevation: float, size: int, azimuth_start: float = 0.0,
               distance: float = ORBIT_DISTANCE, fovy: float = ORBIT_FOVY) -> ViewSet:
    """`count` square views of `size` px evenly spaced in azimuth, view k at
    `azimuth_start + 360 k / count` degrees, at `elevation` degrees on an orbit of radius
    `distance` looking at the origin with vertical field of view `fovy` degrees."""
    if count < 1:
        raise ValueError(f"ring_views: count={count} must be >= 1")
    azimuths = azimuth_start + 360.0 * np.arange(count) / count
    viewmats, ks, c2w = orbit_cameras(elevation, azimuths, distance=distance,
                                      fovy_degrees=fovy, width=size, height=size)
    return ViewSet(np.asarray(viewmats), np.asarray(ks), np.asarray(c2w), azimuths)


class ViewRenderer:
    """Renders Gaussians into sets of C views (see the module docstring).

    Args:
      width, height: image size in pixels.
      background: a grey level or an RGB triple behind the Gaussians.
      tile_capacity: the capacity to start with (the current one is `self.tile_capacity`).
      overflow: "grow" or "raise" (module docstring).
      cameras_per_step: cameras per compiled call, or None for all of them at once.
      batch_size, near, far: passed to `rasterize`.
    """

    def __init__(self, width: int, height: int, *,
                 background: float | ArrayLike = GREY_BACKGROUND, tile_capacity: int = 1024,
                 overflow: str = "grow", cameras_per_step: int | None = None,
                 batch_size: int = 32,
                 near: float = NEAR_PLANE, far: float = FAR_PLANE):
        if overflow not in OVERFLOW_MODES:
            raise ValueError(f"ViewRenderer: overflow={overflow!r}, expected one of "
                             f"{OVERFLOW_MODES}")
        sizes = {"width": width, "height": height, "tile_capacity": tile_capacity,
                 "batch_size": batch_size, "cameras_per_step": cameras_per_step}
        for name, value in sizes.items():
            if value is None and name == "cameras_per_step":
                continue
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ViewRenderer: {name}={value!r} must be a positive int")
        background = np.broadcast_to(np.asarray(background, np.float32), (3,))
        self.width, self.height = int(width), int(height)
        self.background = background
        self.tile_capacity = int(tile_capacity)
        self.overflow = overflow
        self.cameras_per_step = cameras_per_step
        self.batch_size, self.near, self.far = batch_size, near, far

    def __call__(self, gaussians: Gaussians, viewmats: ArrayLike, Ks: ArrayLike, *,
                 progress: str | None = None) -> ViewRender:
        """Render `gaussians` into the cameras `viewmats` [C, 4, 4], `Ks` [C, 3, 3];
        `progress` names a tqdm bar over the cameras (none when None)."""
        viewmats, ks = np.asarray(viewmats, np.float32), np.asarray(Ks, np.float32)
        if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4) or ks.shape != (
                len(viewmats), 3, 3):
            raise ValueError(f"ViewRenderer: viewmats must be [C, 4, 4] and Ks [C, 3, 3], "
                             f"got {viewmats.shape} and {ks.shape}")
        count = len(viewmats)
        per_step = min(self.cameras_per_step or count, count)
        limit = _round_up(gaussians.num_gaussians, self.batch_size)
        while True:
            capacity = min(self.tile_capacity, limit)
            out, overflow, needed = self._render_all(gaussians, viewmats, ks, per_step,
                                                     capacity, progress)
            bad = np.flatnonzero(overflow)
            if not bad.size:
                return out
            if self.overflow == "raise":
                raise TileOverflowError(capacity, int(needed.max()), bad, count)
            self.tile_capacity = _round_up(int(_GROWTH * needed.max()), _GROWTH_MULTIPLE)

    def _render_all(self, gaussians: Gaussians, viewmats: np.ndarray, ks: np.ndarray,
                    per_step: int, capacity: int, progress: str | None
                    ) -> tuple[ViewRender, np.ndarray, np.ndarray]:
        """All cameras in chunks of `per_step`: (renders, overflow [C], needed [C])."""
        count = len(viewmats)
        pad = ((0, -count % per_step), (0, 0), (0, 0))
        viewmats, ks = np.pad(viewmats, pad, mode="edge"), np.pad(ks, pad, mode="edge")
        chunks = []
        with tqdm(total=count, unit="view", desc=progress, disable=progress is None,
                  leave=False) as bar:
            for first in range(0, count, per_step):
                chunk = slice(first, first + per_step)
                chunks.append(jax.device_get(_render(
                    gaussians, viewmats[chunk], ks[chunk], self.background,
                    width=self.width, height=self.height, tile_capacity=capacity,
                    batch_size=self.batch_size, near=self.near, far=self.far)))
                bar.update(min(per_step, count - first))
        colors, alphas, depths, overflow, needed = (np.concatenate(x)[:count]
                                                    for x in zip(*chunks))
        return ViewRender(colors, alphas, depths), overflow, needed


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@functools.partial(jax.jit, static_argnames=("width", "height", "tile_capacity",
                                             "batch_size", "near", "far"))
def _render(gaussians: Gaussians, viewmats: jax.Array, ks: jax.Array, background: jax.Array,
            *, width: int, height: int, tile_capacity: int, batch_size: int, near: float,
            far: float) -> tuple[jax.Array, ...]:
    """colors [C, H, W, 3] clipped, alphas and expected depths [C, H, W], overflow [C],
    max_tile_count [C]."""
    colors, alphas, meta = rasterize(
        **gaussians.activated(), viewmats=viewmats, Ks=ks, width=width, height=height,
        sh_degree=gaussians.sh_degree, near=near, far=far,
        backgrounds=jnp.broadcast_to(background, (len(viewmats), 3)),
        tile_capacity=tile_capacity, batch_size=batch_size)
    return (jnp.clip(colors, 0.0, 1.0), alphas[..., 0], meta["expected_depths"][..., 0],
            meta["overflow"], meta["max_tile_count"])
