"""The 4D asset of Stage Two: a fixed canonical `Gaussians` and a motion field (Eq. 9).

    field = init_motion_field(key, canonical, MotionConfig())
    posed = deform(field, canonical, tau)                      # Gaussians at time tau
    colors, alphas = render_frames(field, canonical, taus, viewmats, Ks, 256, 256)

`MotionField` holds the HexPlane field (`hexplane`), the decoder (`decoder`) and the 4D
SH coefficients (`sh4d`); only they are optimised, the canonical Gaussians stay as
loaded. At a time tau in [0, 1] (frame t of N_t + 1 at t / N_t, see `hexplane`) each
Gaussian gets the HexPlane feature of its canonical centre, the decoder's offsets move
its centre and log-scales and add a residual to its quaternion (renormalised by the
rasterizer: `Gaussians` quaternions are of any norm), and its SH is the cosine series
at tau. A new field is the identity: `deform` returns the canonical arrays themselves.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from t4a_jax.fourd.decoder import apply_decoder, init_decoder
from t4a_jax.fourd.features import init_feature_params
from t4a_jax.fourd.hexplane import (HexPlaneConfig, HexPlaneField, hexplane_features,
                                    init_hexplane)
from t4a_jax.fourd.sh4d import init_sh4d, sh_at
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.rasterize import rasterize


@dataclasses.dataclass(frozen=True)
class MotionConfig:
    """The field's sizes: HexPlane scales and channels, decoder width and trunk depth,
    cosine terms `sh_terms` of the 4D SH (w; 1 = static colour), and the hybrid
    feature (Eq. 6, `features`): `feature_channels` C of the Stage One U-Net's maps
    (0: HexPlane features only) projected to `feature_dim` beside the HexPlane ones."""

    hexplane: HexPlaneConfig = HexPlaneConfig()
    width: int = 64
    depth: int = 1
    sh_terms: int = 4
    feature_channels: int = 0
    feature_dim: int = 16

    @property
    def decoder_inputs(self) -> int:
        return self.hexplane.feature_dim + (self.feature_dim if self.feature_channels else 0)


@struct.dataclass
class MotionField:
    """hexplane, decoder, sh4d (module docstring); features: the diffusion-feature
    projection (`features.init_feature_params`) or None for HexPlane features only."""

    hexplane: HexPlaneField
    decoder: dict
    sh4d: jax.Array
    features: dict | None = None


def init_motion_field(key: jax.Array, canonical: Gaussians, config: MotionConfig
                      ) -> MotionField:
    """A field that leaves `canonical` unmoved (see the module docstring)."""
    plane_key, decoder_key, feature_key = jax.random.split(key, 3)
    return MotionField(
        hexplane=init_hexplane(plane_key, canonical.means, config.hexplane),
        decoder=init_decoder(decoder_key, config.decoder_inputs, config.width, config.depth),
        sh4d=init_sh4d(canonical.sh, config.sh_terms),
        features=(init_feature_params(feature_key, config.feature_channels,
                                      config.feature_dim)
                  if config.feature_channels else None))


def deform(field: MotionField, canonical: Gaussians, tau: jax.Array,
           features: jax.Array | None = None) -> Gaussians:
    """The Gaussians at time tau (a scalar in [0, 1]); `features` [N, feature_dim] are
    the diffusion features at that time (`features.diffusion_features`; required iff the
    field has `features`), concatenated after the HexPlane ones."""
    plane_features = hexplane_features(field.hexplane, canonical.means, tau)
    features = (plane_features if features is None
                else jnp.concatenate([plane_features, features], axis=-1))
    d_position, d_rotation, d_scale = apply_decoder(field.decoder, features)
    return canonical.replace(means=canonical.means + d_position,
                             quats=canonical.quats + d_rotation,
                             log_scales=canonical.log_scales + d_scale,
                             sh=sh_at(field.sh4d, tau))


def render_frames(field: MotionField, canonical: Gaussians, taus: jax.Array,
                  viewmats: jax.Array, Ks: jax.Array, width: int, height: int, *,
                  backgrounds: jax.Array | None = None, tile_capacity: int = 1024,
                  features: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Renders of the asset at times taus [T] in cameras viewmats [T, V, 4, 4], Ks
    [T, V, 3, 3] (any V per frame, e.g. the 4 training views): colors [T, V, H, W, 3],
    alphas [T, V, H, W, 1] and the tile overflow [T, V] (0: exact); `features`
    [T, N, feature_dim] are the frames' extra features (see `deform`). One program: the
    deformation is vmapped over frames, the cameras are the rasterizer's leading dims."""

    def one(tau, viewmat, k, background, frame_features):
        posed = deform(field, canonical, tau, frame_features)
        colors, alphas, meta = rasterize(
            **posed.activated(), viewmats=viewmat, Ks=k, width=width, height=height,
            sh_degree=posed.sh_degree, backgrounds=background,
            tile_capacity=tile_capacity)
        return colors, alphas, meta["overflow"]

    if backgrounds is None:
        backgrounds = jnp.zeros(viewmats.shape[:-2] + (3,), viewmats.dtype)
    return jax.vmap(one)(taus, viewmats, Ks, backgrounds, features)
