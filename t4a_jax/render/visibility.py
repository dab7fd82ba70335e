"""Where points and Gaussians land in a set of views, and what hides them there.

Conventions are those of `rasterize`: V views given as world-to-camera `viewmats`
[V, 4, 4] (OpenCV axes: x right, y down, z forward) and intrinsics `Ks` [V, 3, 3] in
pixels of a `width` x `height` image; pixel coordinates (x, y) with pixel centres at
+0.5 (pixel column i covers [i, i + 1)); camera depth is camera-space z. Points come
per view, [..., V, N, 3] (N of them in each view, any leading dims such as frames), in
world units; camera centres [V, 3] are world positions (`c2w[:, :3, 3]`, e.g. a
`render.views.ViewSet`'s). Host NumPy in and out (float64 where computed here).

- `project_points` / `unproject`: the pinhole camera and its inverse at a given depth.
- `facing`: the cosine between surface normals and the direction to the camera.
- `depth_visible`: points seen in a render, by comparison with its expected depth.
- `project_gaussians`: the rasterizer's EWA projection of Gaussians into every view.
- `dominant_gaussians`: at given pixels, the Gaussian with the largest compositing
  weight alpha_i T_i (the one whose colour the pixel mostly shows) and its depth.
- `front_transmittance`: at the pixel containing a point, the fraction of light that
  the Gaussians lying in front of the point let through: an occlusion test that, unlike
  a comparison with the rendered expected depth, is not fooled by pixels that mix two
  surfaces.

Both Gaussian tests re-evaluate the compositing of `render.composite` (its
`conic_power` and `splat_alpha`, alphas below `ALPHA_THRESHOLD` skipped, depth order),
without the tile lists: every Gaussian counts at every pixel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from t4a_jax.render.composite import conic_power, splat_alpha
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.projection import (ALPHA_THRESHOLD, FAR_PLANE, NEAR_PLANE, Projected,
                                       covariance_3d, project)


def project_points(points: np.ndarray, viewmats: np.ndarray, Ks: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (x, y) [..., V, N, 2] and camera depths [..., V, N] of world points
    [..., V, N, 3] in each view."""
    rotation = viewmats[:, None, :3, :3].astype(np.float64)
    camera = np.einsum("vnij,...vnj->...vni", rotation, points) + viewmats[:, None, :3, 3]
    k = Ks[:, None].astype(np.float64)
    z = camera[..., 2]
    xy = np.stack([k[..., 0, 0] * camera[..., 0] / z + k[..., 0, 2],
                   k[..., 1, 1] * camera[..., 1] / z + k[..., 1, 2]], axis=-1)
    return xy, z


def unproject(pixels: np.ndarray, depth: np.ndarray, viewmats: np.ndarray,
              Ks: np.ndarray) -> np.ndarray:
    """World points [V, N, 3] on the rays through `pixels` [V, N, 2] at camera depth
    `depth` [V, N] (the inverse of `project_points`)."""
    k = Ks.astype(np.float64)
    x = (pixels[..., 0] - k[:, None, 0, 2]) / k[:, None, 0, 0] * depth
    y = (pixels[..., 1] - k[:, None, 1, 2]) / k[:, None, 1, 1] * depth
    camera = np.stack([x, y, depth], axis=-1)
    rotation = viewmats[:, :3, :3].astype(np.float64)
    translation = viewmats[:, :3, 3].astype(np.float64)
    return np.einsum("vji,vnj->vni", rotation, camera - translation[:, None])


def facing(points: np.ndarray, normals: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Cosine [..., V, N] between each point's unit normal [..., V, N, 3] and the
    direction from the point [..., V, N, 3] to its view's camera centre [V, 3]:
    negative for a surface seen from behind."""
    to_camera = centres[:, None] - points
    to_camera /= np.linalg.norm(to_camera, axis=-1, keepdims=True)
    return np.sum(normals * to_camera, axis=-1)


def depth_visible(points: np.ndarray, viewmats: np.ndarray, Ks: np.ndarray,
                  depths: np.ndarray, alphas: np.ndarray, *, margin: float) -> np.ndarray:
    """bool [V, N]: world points [N, 3] seen in each view by a depth test against a
    render of the object: on the image, in front of the near plane, on the object
    (rendered alpha > 0.5 at the pixel holding the point) and no deeper than the
    rendered expected depth there plus `margin` (world units). `depths`, `alphas`
    [V, H, W] are a `render.views.ViewRender`'s. Cheaper than `front_transmittance`
    (one lookup per point) and, like any expected-depth test, unsure where a pixel mixes
    two surfaces."""
    height, width = alphas.shape[1:]
    xy, z = project_points(np.broadcast_to(points, (len(viewmats),) + points.shape),
                           viewmats, Ks)
    on_image = ((z > NEAR_PLANE) & (xy[..., 0] >= 0) & (xy[..., 0] < width)
                & (xy[..., 1] >= 0) & (xy[..., 1] < height))
    cols = np.clip(np.floor(xy[..., 0]), 0, width - 1).astype(int)
    rows = np.clip(np.floor(xy[..., 1]), 0, height - 1).astype(int)
    view = np.arange(len(viewmats))[:, None]
    on_object = alphas[view, rows, cols] > 0.5
    return on_image & on_object & (z <= depths[view, rows, cols] + margin)


def project_gaussians(gaussians: Gaussians, viewmats: np.ndarray, Ks: np.ndarray,
                      width: int, height: int, *, near: float = NEAR_PLANE,
                      far: float = FAR_PLANE) -> Projected:
    """The rasterizer's projection of the Gaussians into every view, fields [V, N, ...]
    as host arrays (`projection.Projected`: means2d, conics, depths, radii, valid)."""
    return jax.device_get(_project_views(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, viewmats,
        Ks, width=width, height=height, near=near, far=far))


@functools.partial(jax.jit, static_argnames=("width", "height", "near", "far"))
def _project_views(means, quats, scales, opacities, viewmats, ks, *, width: int,
                   height: int, near: float, far: float) -> Projected:
    covars = covariance_3d(quats, scales)
    return jax.vmap(lambda v, k: project(means, covars, opacities, v, k, width, height,
                                         near, far))(viewmats, ks)


def dominant_gaussians(gaussians: Gaussians, viewmats: np.ndarray, Ks: np.ndarray,
                       width: int, height: int, pixels: np.ndarray, *,
                       near: float = NEAR_PLANE, far: float = FAR_PLANE
                       ) -> tuple[np.ndarray, np.ndarray]:
    """For pixels (x, y) `pixels` [V, N, 2] of each view: the index [V, N] of the
    Gaussian with the largest compositing weight alpha_i T_i there, and its camera
    depth [V, N]; index -1 where no Gaussian reaches the pixel."""
    proj = project_gaussians(gaussians, viewmats, Ks, width, height, near=near, far=far)
    opacities = np.asarray(gaussians.opacities)
    index = np.full(pixels.shape[:2], -1)
    depth = np.zeros(pixels.shape[:2])
    for v in range(len(pixels)):
        order = np.argsort(proj.depths[v], kind="stable")
        mean = proj.means2d[v][order]
        dx = pixels[v, :, None, 0] - mean[None, :, 0]
        dy = pixels[v, :, None, 1] - mean[None, :, 1]
        alpha = splat_alpha(opacities[order], conic_power(proj.conics[v][order], dx, dy))
        alpha = np.where((alpha >= ALPHA_THRESHOLD) & proj.valid[v][order], alpha, 0.0)
        in_front = np.exp(np.cumsum(np.log1p(-alpha), axis=1) - np.log1p(-alpha))
        weight = alpha * in_front
        best = np.argmax(weight, axis=1)
        reached = weight[np.arange(len(best)), best] > 0
        index[v] = np.where(reached, order[best], -1)
        depth[v] = proj.depths[v][order[best]]
    return index, depth


def front_transmittance(gaussians: Gaussians, viewmats: np.ndarray, Ks: np.ndarray,
                        width: int, height: int, xy: np.ndarray, depth: np.ndarray, *,
                        margin: float, where: np.ndarray | None = None,
                        near: float = NEAR_PLANE, far: float = FAR_PLANE) -> np.ndarray:
    """[V, N]: the fraction of light that the Gaussians whose centres lie more than
    `margin` (world units of camera depth) in front of each point (at camera depth
    `depth` [V, N]) let through at the centre of the pixel containing the point (`xy`
    [V, N, 2]), i.e. prod (1 - alpha_i) over those Gaussians: 1 for an unoccluded point,
    about 0 behind a surface. The margin keeps a point's own surface from hiding it.

    Only the points where `where` [V, N] is True are evaluated (the others get 1); their
    number is padded to a power of two, so few shapes are ever compiled.
    """
    where = np.ones(depth.shape, bool) if where is None else where
    view, point = np.nonzero(where)
    padded = max(64, 1 << int(np.ceil(np.log2(max(len(view), 1)))))
    pad = padded - len(view)
    transmittance = _front_transmittance(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
        viewmats, Ks, np.pad(view, (0, pad)),
        np.pad(xy[view, point], ((0, pad), (0, 0))).astype(np.float32),
        np.pad(depth[view, point] - margin, (0, pad)).astype(np.float32),
        width=width, height=height, near=near, far=far)
    result = np.ones(depth.shape, np.float32)
    result[view, point] = np.asarray(transmittance)[:len(view)]
    return result


@functools.partial(jax.jit, static_argnames=("width", "height", "near", "far"))
def _front_transmittance(means, quats, scales, opacities, viewmats, ks, view, xy, limit, *,
                         width: int, height: int, near: float, far: float) -> jax.Array:
    """view [K] int, xy [K, 2], limit [K] -> transmittance [K]."""
    proj = _project_views(means, quats, scales, opacities, viewmats, ks, width=width,
                          height=height, near=near, far=far)
    centre = jnp.floor(xy) + 0.5
    means2d = proj.means2d[view]                                             # [K, G, 2]
    dx = centre[:, None, 0] - means2d[..., 0]
    dy = centre[:, None, 1] - means2d[..., 1]
    alpha = splat_alpha(opacities, conic_power(proj.conics[view], dx, dy))
    in_front = (proj.valid[view] & (alpha >= ALPHA_THRESHOLD)
                & (proj.depths[view] < limit[:, None]))
    return jnp.exp(jnp.sum(jnp.where(in_front, jnp.log1p(-alpha), 0.0), axis=-1))
