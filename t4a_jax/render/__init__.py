"""Rendering: cameras, spherical harmonics, the tile rasterizer and Gaussian assets.

    from t4a_jax import render
    colors, alphas, meta = render.rasterize(means, quats, scales, opacities, rgb,
                                            viewmats, Ks, width=256, height=256)
    gaussians = load_asset("model.glb")                      # render.assets
    views = ring_views(4, elevation=15.0, size=256)          # render.views
    out = ViewRenderer(256, 256)(gaussians, views.viewmats, views.Ks)

A leaf package (it imports nothing else of t4a_jax). Modules: `cameras`, `sh`,
`projection`, `binning`, `composite` (the alpha law and compositing), `rasterize`;
`gaussians`, `ply`, `mesh`, `primitives` (surface samplers), `builtin` (the toy object),
`assets` (`load_asset`); `views` (the one renderer of a set of views, with tile-capacity
handling) and `visibility` (point projection, facing and occlusion tests).
"""

from t4a_jax.render.cameras import (c2w_to_viewmat, camera_vector, intrinsics_from_fov,
                                    look_at, orbit_c2w, orbit_cameras, orbit_position,
                                    rigid_inverse)
from t4a_jax.render.assets import load_asset
from t4a_jax.render.gaussians import Gaussians, rgb_from_sh_dc, sh_from_rgb
from t4a_jax.render.projection import covariance_3d, quat_to_rotmat
from t4a_jax.render.rasterize import rasterize
from t4a_jax.render.sh import eval_sh, num_sh_bases, sh_basis
from t4a_jax.render.views import TileOverflowError, ViewRenderer, ViewSet, ring_views

__all__ = [
    "Gaussians", "TileOverflowError", "ViewRenderer", "ViewSet", "c2w_to_viewmat",
    "camera_vector", "covariance_3d", "eval_sh", "intrinsics_from_fov", "load_asset",
    "look_at", "num_sh_bases", "orbit_c2w", "orbit_cameras", "orbit_position",
    "quat_to_rotmat", "rasterize", "rgb_from_sh_dc", "rigid_inverse", "ring_views",
    "sh_basis", "sh_from_rgb",
]
