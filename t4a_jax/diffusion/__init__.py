"""Diffusion: the noise schedule, training targets, the condition-frame noise of Eq. 2,
and DDIM sampling, as pure functions over arrays (no model code).

    schedule = make_schedule()                       # Animate3D's DDIM settings
    x_t = add_noise(schedule, z0, eps, t)            # z0, eps [N, F, h, w, 4], t [N]
    loss_target = target(schedule, z0, eps, t)
    z1_t = add_condition_noise(ConditionNoiseConfig(), schedule, z1, eps1, t, key)
    sample = jax.jit(lambda noise, cond, uncond, z1: sample_ddim(
        denoise_fn, schedule, noise, cond, uncond, condition_latent=z1))

A leaf package: it imports nothing else of t4a_jax, and a sampler takes the network as
a denoise function. The whole Stage One inference (encoders, sampling loop, decoding) is
`t4a_jax.pipeline.sample_multiview_video`.
"""

from t4a_jax.diffusion.ddim import (classifier_free_guidance, ddim_step, ddim_timesteps,
                                    predict_x0_and_noise, sample_ddim)
from t4a_jax.diffusion.schedule import (ConditionNoiseConfig, NoiseSchedule, ScheduleConfig,
                                        add_condition_noise, add_noise, condition_noise_scale,
                                        make_schedule, target, velocity)

__all__ = [
    "ConditionNoiseConfig", "NoiseSchedule", "ScheduleConfig", "add_condition_noise",
    "add_noise", "classifier_free_guidance", "condition_noise_scale", "ddim_step",
    "ddim_timesteps", "make_schedule", "predict_x0_and_noise", "sample_ddim", "target",
    "velocity",
]
