"""Stage Two's 4D Gaussian Splatting pieces (paper Sec. 3.3), pure functions over
pytrees: the HexPlane motion features (`hexplane`), the multi-head deformation decoder
(`decoder`, Eq. 7), 4D spherical harmonics (`sh4d`, Eq. 8), the deformed asset and its
renders (`deform`, Eq. 9), the diffusion-feature half of the hybrid feature
(`features`, Eq. 6), the ARAP regulariser (`arap`), the reconstruction loss with
progressive frames and the per-group optimiser (`objective`, Eq. 10), and 4D-SDS over
a denoise function (`sds`, Eq. 11).

    field = init_motion_field(key, canonical, MotionConfig())
    posed = deform(field, canonical, tau)                        # tau in [0, 1]

Imports `render` and `diffusion` only, never `models`: the Stage One networks
reach it as functions.
"""

from t4a_jax.fourd.arap import arap_loss, kabsch, nearest_neighbours
from t4a_jax.fourd.decoder import apply_decoder, init_decoder
from t4a_jax.fourd.features import diffusion_features, init_feature_params, sample_maps
from t4a_jax.fourd.deform import (MotionConfig, MotionField, deform, init_motion_field,
                                  render_frames)
from t4a_jax.fourd.hexplane import (HexPlaneConfig, HexPlaneField, hexplane_features,
                                    init_hexplane, plane_total_variation, sample_plane,
                                    time_smoothness)
from t4a_jax.fourd.objective import (OptimizerConfig, draw_frames, frames_in_play,
                                     make_optimizer, parameter_groups, reconstruction_loss)
from t4a_jax.fourd.sds import sds_loss
from t4a_jax.fourd.sh4d import init_sh4d, sh_at

__all__ = [
    "HexPlaneConfig", "HexPlaneField", "MotionConfig", "MotionField", "OptimizerConfig",
    "apply_decoder", "arap_loss", "deform", "diffusion_features", "draw_frames",
    "frames_in_play", "init_feature_params", "sample_maps",
    "hexplane_features", "init_decoder", "init_hexplane", "init_motion_field", "init_sh4d",
    "kabsch", "make_optimizer", "nearest_neighbours", "parameter_groups",
    "plane_total_variation", "reconstruction_loss", "render_frames", "sample_plane",
    "sds_loss",
    "sh_at", "time_smoothness",
]
