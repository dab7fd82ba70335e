"""Rendering: cameras, spherical harmonics, the tile rasterizer and Gaussian assets.

    from t4a_jax import render
    colors, alphas, meta = render.rasterize(means, quats, scales, opacities, rgb,
                                            viewmats, Ks, width=256, height=256)
"""

from t4a_jax.render.cameras import (c2w_to_viewmat, camera_vector, intrinsics_from_fov,
                                    look_at, orbit_c2w, orbit_cameras, orbit_position,
                                    rigid_inverse)
from t4a_jax.render.gaussians import Gaussians, rgb_from_sh_dc, sh_from_rgb
from t4a_jax.render.projection import covariance_3d, quat_to_rotmat
from t4a_jax.render.rasterize import rasterize
from t4a_jax.render.sh import eval_sh, num_sh_bases, sh_basis

__all__ = [
    "Gaussians", "c2w_to_viewmat", "camera_vector", "covariance_3d", "eval_sh",
    "intrinsics_from_fov", "look_at", "num_sh_bases", "orbit_c2w", "orbit_cameras",
    "orbit_position", "quat_to_rotmat", "rasterize", "rgb_from_sh_dc", "rigid_inverse",
    "sh_basis", "sh_from_rgb",
]
