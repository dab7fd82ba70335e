"""A slow, obvious float64 NumPy Gaussian renderer: the judge of `t4a_jax.render`.

Every Gaussian is evaluated at every pixel, in depth order, one Gaussian at a time,
with the constants of the gsplat/INRIA CUDA rasterizers written out here from their
definitions (no tiles, no capacities, no batching):

- rotation from the quaternion via SciPy, covariance R diag(s^2) R^T;
- EWA: J (clamped at 1.3x the field of view) W Sigma W^T J^T + 0.3 I;
- colour from SH via SciPy's complex spherical harmonics (real part / imaginary part
  times sqrt(2), which is the 3DGS basis with its Condon-Shortley signs), +0.5, >= 0;
- alpha = min(0.99, o exp(-0.5 d^T conic d)); skip alpha < 1/255; stop a pixel before
  the Gaussian that would bring its transmittance to 1e-4 or below.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.special import sph_harm_y


def real_sh_basis(degree: int, dirs: np.ndarray) -> np.ndarray:
    """The 3DGS real SH basis [M, (degree+1)^2] at directions [M, 3], from SciPy."""
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    polar = np.arccos(np.clip(dirs[:, 2], -1.0, 1.0))
    azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
    columns = []
    for l in range(degree + 1):
        for m in range(-l, l + 1):
            y = sph_harm_y(l, abs(m), polar, azimuth)
            if m < 0:
                columns.append(np.sqrt(2.0) * y.imag)
            elif m == 0:
                columns.append(y.real)
            else:
                columns.append(np.sqrt(2.0) * y.real)
    return np.stack(columns, axis=-1)


def render_reference(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                     *, sh_degree=None, near=0.01, far=1e10, backgrounds=None):
    """Returns (colors [C,H,W,3], alphas [C,H,W,1], depths [C,H,W,1]) in float64."""
    means = np.asarray(means, np.float64)
    quats = np.asarray(quats, np.float64)
    scales = np.asarray(scales, np.float64)
    opacities = np.asarray(opacities, np.float64)
    colors = np.asarray(colors, np.float64)
    rotations = Rotation.from_quat(quats[:, [1, 2, 3, 0]]).as_matrix()
    covars = rotations @ (scales[:, :, None] ** 2 * np.swapaxes(rotations, 1, 2))
    out_rgb, out_alpha, out_depth = [], [], []
    for c, (viewmat, K) in enumerate(zip(np.asarray(viewmats, np.float64),
                                        np.asarray(Ks, np.float64))):
        bg = np.zeros(3) if backgrounds is None else np.asarray(backgrounds[c], np.float64)
        rgb, alpha, depth = _render_camera(means, covars, opacities, colors, viewmat, K,
                                           width, height, sh_degree, near, far, bg)
        out_rgb.append(rgb)
        out_alpha.append(alpha)
        out_depth.append(depth)
    return np.stack(out_rgb), np.stack(out_alpha), np.stack(out_depth)


def _render_camera(means, covars, opacities, colors, viewmat, K, width, height, sh_degree,
                   near, far, background):
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if sh_degree is None:
        rgb = colors
    else:
        centre = -rot.T @ trans
        basis = real_sh_basis(sh_degree, means - centre)
        rgb = np.einsum("nk,nkc->nc", basis, colors[:, :basis.shape[1]])
        rgb = np.maximum(rgb + 0.5, 0.0)

    ys, xs = np.mgrid[0:height, 0:width]
    px = xs.ravel() + 0.5
    py = ys.ravel() + 0.5
    transmittance = np.ones(px.shape)
    done = np.zeros(px.shape, bool)
    acc_rgb = np.zeros((px.size, 3))
    acc_depth = np.zeros(px.size)

    cam = means @ rot.T + trans
    order = np.argsort(cam[:, 2], kind="stable")
    lim_x = (cx / fx + 0.3 * 0.5 * width / fx, (width - cx) / fx + 0.3 * 0.5 * width / fx)
    lim_y = (cy / fy + 0.3 * 0.5 * height / fy, (height - cy) / fy + 0.3 * 0.5 * height / fy)
    for i in order:
        x, y, z = cam[i]
        if not near < z < far or opacities[i] < 1.0 / 255.0:
            continue
        tx = z * min(lim_x[1], max(-lim_x[0], x / z))
        ty = z * min(lim_y[1], max(-lim_y[0], y / z))
        jac = np.array([[fx / z, 0.0, -fx * tx / z ** 2], [0.0, fy / z, -fy * ty / z ** 2]])
        cov2d = jac @ rot @ covars[i] @ rot.T @ jac.T + 0.3 * np.eye(2)
        if np.linalg.det(cov2d) <= 0.0:
            continue
        conic = np.linalg.inv(cov2d)
        mx, my = fx * x / z + cx, fy * y / z + cy
        dx, dy = px - mx, py - my
        power = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
        alpha = np.minimum(0.99, opacities[i] * np.exp(-power))
        live = (alpha >= 1.0 / 255.0) & (power >= 0.0) & ~done
        next_t = transmittance * (1.0 - alpha)
        stop = live & (next_t <= 1e-4)
        done |= stop
        take = live & ~stop
        weight = np.where(take, alpha * transmittance, 0.0)
        acc_rgb += weight[:, None] * rgb[i]
        acc_depth += weight * z
        transmittance = np.where(take, next_t, transmittance)
    out_rgb = acc_rgb + transmittance[:, None] * background
    shape = (height, width)
    return (out_rgb.reshape(shape + (3,)), (1.0 - transmittance).reshape(shape + (1,)),
            acc_depth.reshape(shape + (1,)))
