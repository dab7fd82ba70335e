"""Stage One's training objective (paper Sec. 3.2): L = l1 L_diff + l2 L_corr + l3 L_pos.

One U-Net pass gives both the noise prediction and the tapped features:

- Frames 2..F of every object-view are noised by the forward process (Eq. 1) at one
  timestep per object (its views share it, as they are denoised jointly); frame 1, the
  condition, gets the noise of Eq. 2 (`ConditionNoiseConfig`, 'off' = Animate3D).
- L_diff (Eq. 3): mean squared error between the U-Net's output and its target
  (`diffusion.target`: the noise for epsilon prediction) over the noised frames only.
- L_corr, L_pos (Eqs. 4-5, `losses.py`): on the features captured at `feature_tap`
  (default the last temporal motion module of `up_blocks[1]`), at `points_per_view`
  tracked points drawn per view from the valid grid queries.

Shapes: B objects, V views, F frames, latents [B*V, F, h, w, 4] (VAE-scaled, channels
last), text states [B*V, L, D], tracks [B, V, F, N, 2] in pixels of the training images
(`image_size`), visibility [B, V, F, N], query_valid [B, V, N].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from t4a_jax.diffusion.schedule import (ConditionNoiseConfig, NoiseSchedule,
                                        add_condition_noise, add_noise, target)
from t4a_jax.models.unet import UNet
from t4a_jax.tracking import losses
from t4a_jax.tracking.queries import POINTS_PER_VIEW, draw_points

DEFAULT_TAP = "up_blocks.1.motion_modules.2"


@dataclasses.dataclass(frozen=True)
class StageOneLossConfig:
    """Loss weights (l1, l2, l3) = (diffusion, correspondence, position), paper defaults
    (1.0, 0.1, 10); the feature tap; points drawn per view; soft-argmax temperature and
    Huber delta of L_pos; the condition-frame noise of Eq. 2."""

    diffusion_weight: float = 1.0
    correspondence_weight: float = 0.1
    position_weight: float = 10.0
    feature_tap: str = DEFAULT_TAP
    points_per_view: int = POINTS_PER_VIEW
    temperature: float = losses.SOFT_ARGMAX_TEMPERATURE
    huber_delta: float = losses.HUBER_DELTA
    condition_noise: ConditionNoiseConfig = ConditionNoiseConfig()

    @classmethod
    def from_config_dict(cls, config: ml_collections.ConfigDict | Mapping[str, Any]
                         ) -> "StageOneLossConfig":
        values = dict(config.to_dict() if isinstance(config, ml_collections.ConfigDict)
                      else config)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"StageOneLossConfig: unknown fields {unknown}")
        if "condition_noise" in values:
            values["condition_noise"] = ConditionNoiseConfig.from_config_dict(
                values["condition_noise"])
        return cls(**values)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class StageOneBatch:
    """One training batch on device (see the module docstring for shapes).
    `image_embeds` [B*V, E] is None for a U-Net without IP-Adapter."""

    latents: jax.Array
    text_states: jax.Array
    cameras: jax.Array
    tracks: jax.Array
    visibility: jax.Array
    query_valid: jax.Array
    image_embeds: jax.Array | None = None


def stage_one_loss(unet: UNet, batch: StageOneBatch, schedule: NoiseSchedule,
                   key: jax.Array, config: StageOneLossConfig,
                   image_size: tuple[int, int]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(L, parts) with parts {'loss', 'diffusion', 'correspondence', 'position',
    'timestep_mean', 'tracked_points'} (scalars, for logging)."""
    b, v = batch.tracks.shape[:2]
    n = batch.latents.shape[0]
    if n != b * v:
        raise ValueError(f"latents have {n} object-views; tracks say {b} objects x {v} "
                         f"views")
    t_key, noise_key, cond_key, level_key, point_key = jax.random.split(key, 5)
    t = jnp.repeat(jax.random.randint(t_key, (b,), 0, schedule.num_train_timesteps), v)
    z0 = batch.latents
    noise = jax.random.normal(noise_key, z0.shape, z0.dtype)
    noisy = add_noise(schedule, z0[:, 1:], noise[:, 1:], t)
    cond_noise = jax.random.normal(cond_key, z0[:, 0].shape, z0.dtype)
    level_t = t[::v]                                      # one level per object
    condition = add_condition_noise(config.condition_noise, schedule,
                                    z0[:, 0].reshape((b, v) + z0.shape[2:]),
                                    cond_noise.reshape((b, v) + z0.shape[2:]), level_t,
                                    level_key).reshape(z0[:, 0].shape)
    z_t = jnp.concatenate([condition[:, None], noisy], axis=1)
    prediction, features = unet(z_t, t, batch.text_states, cameras=batch.cameras,
                                image_embeds=batch.image_embeds, num_views=v,
                                capture=(config.feature_tap,))
    wanted = target(schedule, z0[:, 1:], noise[:, 1:], t)
    diffusion = jnp.mean(jnp.square(prediction[:, 1:].astype(jnp.float32)
                                    - wanted.astype(jnp.float32)))

    drawn = draw_points(point_key, batch.query_valid, batch.tracks, batch.visibility,
                        config.points_per_view)
    feature_video = losses.video_features(features[config.feature_tap], v).astype(jnp.float32)
    descriptors = losses.sample_descriptors(feature_video, drawn.tracks, image_size)
    correspondence = losses.correspondence_loss(descriptors, drawn.visible)
    position = losses.position_loss(feature_video, descriptors, drawn.tracks, drawn.visible,
                                    image_size, temperature=config.temperature,
                                    delta=config.huber_delta)
    total = (config.diffusion_weight * diffusion
             + config.correspondence_weight * correspondence
             + config.position_weight * position)
    parts = {"loss": total, "diffusion": diffusion, "correspondence": correspondence,
             "position": position, "timestep_mean": jnp.mean(t.astype(jnp.float32)),
             "tracked_points": jnp.sum(drawn.visible[:, :, 0])}
    return total, parts

