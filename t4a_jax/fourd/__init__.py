"""Stage Two's 4D Gaussian Splatting pieces (paper Sec. 3.3), pure functions over
pytrees: the HexPlane motion features (`hexplane`), the multi-head deformation decoder
(`decoder`, Eq. 7), 4D spherical harmonics (`sh4d`, Eq. 8), the deformed asset and its
renders (`deform`, Eq. 9) and the ARAP regulariser (`arap`).

    field = init_motion_field(key, canonical, MotionConfig())
    posed = deform(field, canonical, tau)                        # tau in [0, 1]

Imports `render` only (and later `diffusion`), never `models`: the Stage One networks
reach it as functions.
"""

from t4a_jax.fourd.arap import arap_loss, kabsch, nearest_neighbours
from t4a_jax.fourd.decoder import apply_decoder, init_decoder
from t4a_jax.fourd.deform import (MotionConfig, MotionField, deform, init_motion_field,
                                  render_frames)
from t4a_jax.fourd.hexplane import (HexPlaneConfig, HexPlaneField, hexplane_features,
                                    init_hexplane, plane_total_variation, sample_plane,
                                    time_smoothness)
from t4a_jax.fourd.sh4d import init_sh4d, sh_at

__all__ = [
    "HexPlaneConfig", "HexPlaneField", "MotionConfig", "MotionField", "apply_decoder",
    "arap_loss", "deform", "hexplane_features", "init_decoder", "init_hexplane",
    "init_motion_field", "init_sh4d", "kabsch", "nearest_neighbours",
    "plane_total_variation", "render_frames", "sample_plane", "sh_at", "time_smoothness",
]
