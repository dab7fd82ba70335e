"""Cameras: intrinsics, look-at and orbit poses, and the conventions between them.

Two conventions meet here, written down once:

- **Animate3D / MVDream camera-to-world** (`c2w`, [..., 4, 4]): world +z is up; the
  camera looks along its -z axis with +y up (OpenGL); the columns are
  [right, up, -forward, position]. Orbit position at elevation e, azimuth a (degrees):
  `distance * (cos e cos a, cos e sin a, sin e)`, looking at the origin.
- **Rendering `viewmat`** (gsplat / OpenCV, [..., 4, 4]): world-to-camera, the camera
  looks along +z with +y down and +x right; intrinsics `K` [..., 3, 3] in pixels with
  pixel centres at +0.5 (pixel (row i, col j) has centre (j + 0.5, i + 0.5)).

The U-Net's camera input is the Animate3D `c2w` with its translation normalised to
unit length, flattened row-major to 16 values (`camera_vector`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Array = jnp.ndarray

# OpenGL camera axes (x right, y up, z back) -> OpenCV axes (x right, y down, z forward).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def intrinsics_from_fov(fovy_degrees: float, width: int, height: int,
                        fovx_degrees: float | None = None) -> Array:
    """Pinhole intrinsics K [3, 3] in pixels for a vertical field of view.

    Square pixels unless `fovx_degrees` is given; the principal point is the image
    centre (W / 2, H / 2) in the +0.5 pixel-centre convention.
    """
    fy = 0.5 * height / np.tan(0.5 * np.radians(fovy_degrees))
    fx = fy if fovx_degrees is None else 0.5 * width / np.tan(0.5 * np.radians(fovx_degrees))
    return jnp.array([[fx, 0.0, 0.5 * width], [0.0, fy, 0.5 * height], [0.0, 0.0, 1.0]],
                     dtype=jnp.float32)


def look_at(eye: ArrayLike, target: ArrayLike = (0.0, 0.0, 0.0),
            up: ArrayLike = (0.0, 0.0, 1.0)) -> Array:
    """OpenGL camera-to-world [..., 4, 4] at `eye` [..., 3] looking at `target`.

    Columns [right, up, -forward, eye] with forward = normalise(target - eye),
    right = normalise(forward x up), up' = right x forward. `up` must not be parallel to
    the viewing direction.
    """
    eye = jnp.asarray(eye, jnp.float32)
    target = jnp.broadcast_to(jnp.asarray(target, eye.dtype), eye.shape)
    up = jnp.broadcast_to(jnp.asarray(up, eye.dtype), eye.shape)
    forward = _normalize(target - eye)
    right = _normalize(jnp.cross(forward, up))
    true_up = jnp.cross(right, forward)
    rotation = jnp.stack([right, true_up, -forward], axis=-1)
    top = jnp.concatenate([rotation, eye[..., :, None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], eye.dtype),
                              eye.shape[:-1] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def orbit_position(elevation_degrees: ArrayLike, azimuth_degrees: ArrayLike,
                   distance: ArrayLike = 1.0) -> Array:
    """Animate3D orbit position [..., 3]: distance * (cos e cos a, cos e sin a, sin e)."""
    e = jnp.radians(jnp.asarray(elevation_degrees, jnp.float32))
    a = jnp.radians(jnp.asarray(azimuth_degrees, jnp.float32))
    e, a = jnp.broadcast_arrays(e, a)
    d = jnp.asarray(distance, jnp.float32)
    return d[..., None] * jnp.stack(
        [jnp.cos(e) * jnp.cos(a), jnp.cos(e) * jnp.sin(a), jnp.sin(e)], axis=-1)


def orbit_c2w(elevation_degrees: ArrayLike, azimuth_degrees: ArrayLike,
              distance: ArrayLike = 1.0) -> Array:
    """Animate3D camera-to-world [..., 4, 4] on an orbit around the origin, +z up."""
    return look_at(orbit_position(elevation_degrees, azimuth_degrees, distance))


def c2w_to_viewmat(c2w: ArrayLike) -> Array:
    """OpenGL camera-to-world [..., 4, 4] -> OpenCV world-to-camera `viewmat` [..., 4, 4]."""
    c2w_cv = jnp.asarray(c2w) @ jnp.asarray(_GL_TO_CV, dtype=jnp.asarray(c2w).dtype)
    return rigid_inverse(c2w_cv)


def viewmat_to_c2w(viewmat: ArrayLike) -> Array:
    """OpenCV world-to-camera `viewmat` [..., 4, 4] -> OpenGL camera-to-world (the
    inverse of `c2w_to_viewmat`)."""
    viewmat = jnp.asarray(viewmat)
    return rigid_inverse(viewmat) @ jnp.asarray(_GL_TO_CV, dtype=viewmat.dtype)


def rigid_inverse(transform: ArrayLike) -> Array:
    """Inverse of a rigid transform [..., 4, 4] (rotation + translation), computed exactly."""
    transform = jnp.asarray(transform)
    rotation_t = jnp.swapaxes(transform[..., :3, :3], -1, -2)
    translation = -rotation_t @ transform[..., :3, 3:]
    top = jnp.concatenate([rotation_t, translation], axis=-1)
    return jnp.concatenate([top, transform[..., 3:, :]], axis=-2)


def camera_vector(c2w: ArrayLike) -> Array:
    """The U-Net's camera input [..., 16]: `c2w` with unit-length translation, row-major."""
    c2w = jnp.asarray(c2w)
    translation = _normalize(c2w[..., :3, 3])
    c2w = c2w.at[..., :3, 3].set(translation)
    return c2w.reshape(c2w.shape[:-2] + (16,))


def orbit_cameras(elevation_degrees: ArrayLike, azimuth_degrees: ArrayLike, *,
                  distance: float, fovy_degrees: float, width: int,
                  height: int) -> tuple[Array, Array, Array]:
    """Rendering cameras on an orbit: (viewmats [C,4,4], Ks [C,3,3], c2w [C,4,4]).

    `elevation_degrees` and `azimuth_degrees` broadcast to [C].
    """
    c2w = orbit_c2w(elevation_degrees, azimuth_degrees, distance)
    c2w = c2w.reshape((-1, 4, 4))
    k = intrinsics_from_fov(fovy_degrees, width, height)
    ks = jnp.broadcast_to(k, (c2w.shape[0], 3, 3))
    return c2w_to_viewmat(c2w), ks, c2w


def _normalize(v: Array) -> Array:
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)
