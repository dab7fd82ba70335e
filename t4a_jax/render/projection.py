"""EWA projection of 3D Gaussians into one pinhole camera (gsplat conventions).

Per Gaussian: camera-space mean `R m + t`, covariance `R (Q S)(Q S)^T R^T` from the
quaternion Q and the scales S, the perspective Jacobian J evaluated at the mean with its
x/z and y/z clamped to 1.3x the field of view (as gsplat and the INRIA code do), 2-D
covariance `J Sigma J^T + 0.3 I` (the low-pass dilation), its inverse (the conic), and
an opacity-aware extent: the axis-aligned box containing every pixel centre where
`opacity * exp(-0.5 d^T conic d)` reaches 1/255, i.e. half-widths
`sqrt(2 log(255 o)) * sqrt(Sigma_xx)` and `... * sqrt(Sigma_yy)`.

A Gaussian is culled (`valid` False) when its depth is outside (near, far), its 2-D
covariance is degenerate, its opacity is below 1/255, or its box covers no pixel centre
of the image.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

ALPHA_THRESHOLD = 1.0 / 255.0
LOW_PASS_DILATION = 0.3
JACOBIAN_CLAMP = 1.3
# Pixels of slack on the opacity-aware box, so that float rounding at the exact 1/255
# boundary can never drop a contributing pixel (extra pixels only cost a skipped test).
BOX_SLACK = 1e-2
# The default depth range (camera z) of `rasterize` and of everything that re-evaluates
# its images (`views`, `visibility`): Gaussians whose centres lie outside are culled.
NEAR_PLANE, FAR_PLANE = 0.01, 1e10


class Projected(NamedTuple):
    """Per-Gaussian screen-space quantities for one camera (all [N, ...])."""

    means2d: jax.Array   # [N, 2] pixel coordinates (x, y), pixel centres at +0.5
    conics: jax.Array    # [N, 3] upper triangle (a, b, c) of the inverse 2-D covariance
    depths: jax.Array    # [N] camera-space z
    radii: jax.Array     # [N, 2] float half-widths of the opacity-aware box, 0 if culled
    valid: jax.Array     # [N] bool


def quat_to_rotmat(quats: jax.Array) -> jax.Array:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (w, x, y, z), normalised here."""
    q = quats / jnp.linalg.norm(quats, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def covariance_3d(quats: jax.Array, scales: jax.Array) -> jax.Array:
    """World covariances [N, 3, 3] = (R S)(R S)^T from quats [N, 4] and scales [N, 3]."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ jnp.swapaxes(m, -1, -2)


def project(means: jax.Array, covars: jax.Array, opacities: jax.Array,
            viewmat: jax.Array, K: jax.Array, width: int, height: int,
            near: float, far: float) -> Projected:
    """Project Gaussians (means [N,3], covars [N,3,3], opacities [N]) into one camera.

    `viewmat` [4, 4] is world-to-camera (OpenCV), `K` [3, 3] in pixels.
    """
    rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
    p_cam = means @ rotation.T + translation
    x, y, z = p_cam[:, 0], p_cam[:, 1], p_cam[:, 2]
    in_depth = (z > near) & (z < far)
    z_safe = jnp.where(in_depth, z, 1.0)  # keeps culled entries' gradients finite
    rz = 1.0 / z_safe

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    slack = JACOBIAN_CLAMP - 1.0
    tx = z_safe * jnp.clip(x * rz, -(cx / fx + slack * tan_fovx),
                           (width - cx) / fx + slack * tan_fovx)
    ty = z_safe * jnp.clip(y * rz, -(cy / fy + slack * tan_fovy),
                           (height - cy) / fy + slack * tan_fovy)
    zeros = jnp.zeros_like(rz)
    jac = jnp.stack([
        jnp.stack([fx * rz, zeros, -fx * tx * rz * rz], axis=-1),
        jnp.stack([zeros, fy * rz, -fy * ty * rz * rz], axis=-1),
    ], axis=-2)                                              # [N, 2, 3]
    cov_cam = rotation @ covars @ rotation.T
    cov2d = jac @ cov_cam @ jnp.swapaxes(jac, -1, -2)
    a = cov2d[:, 0, 0] + LOW_PASS_DILATION
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + LOW_PASS_DILATION
    det = a * c - b * b
    good_det = det > 0.0
    inv_det = 1.0 / jnp.where(good_det, det, 1.0)
    conics = jnp.stack([c * inv_det, -b * inv_det, a * inv_det], axis=-1)
    means2d = jnp.stack([fx * x * rz + cx, fy * y * rz + cy], axis=-1)

    visible_opacity = opacities >= ALPHA_THRESHOLD
    log_ratio = jnp.log(jnp.where(visible_opacity, opacities, 1.0) / ALPHA_THRESHOLD)
    extent = jnp.sqrt(2.0 * jnp.maximum(log_ratio, 0.0))
    radii = extent[:, None] * jnp.sqrt(jnp.maximum(jnp.stack([a, c], axis=-1), 0.0))
    radii = jax.lax.stop_gradient(radii) + BOX_SLACK

    lo = means2d - radii
    hi = means2d + radii
    on_screen = ((hi[:, 0] >= 0.5) & (lo[:, 0] <= width - 0.5)
                 & (hi[:, 1] >= 0.5) & (lo[:, 1] <= height - 0.5))
    valid = in_depth & good_det & visible_opacity & on_screen
    radii = jnp.where(valid[:, None], radii, 0.0)
    return Projected(means2d, conics, z, radii, valid)
