"""Noise schedule, sampler and condition-frame noise of Stage One
(`t4a_jax.diffusion`: `make_schedule(config.schedule)`,
`ConditionNoiseConfig.from_config_dict(config.condition_noise)`).

Variants:
  track4animate3d  (default) Animate3D's scheduler (`noise_scheduler_kwargs` of
        yanqinJiang/Animate3D configs/{training/train,inference/inference}.yaml, built as
        diffusers' DDIMScheduler): 1000 steps, linear betas 0.00085-0.012,
        steps_offset 1, no sample clipping, and DDIMScheduler's defaults for the rest
        (set_alpha_to_one, 'leading' spacing, epsilon prediction); DDIM 25 steps,
        eta 0, guidance 7.5; condition-frame noise of Eq. 2 on, TimeNoise (Zhao et al.
        2024) with its 1000-step VP settings.
  animate3d  the same without condition-frame noise (Animate3D's training).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.schedule = ml_collections.ConfigDict()
    config.schedule.num_train_timesteps = 1000
    config.schedule.beta_start = 0.00085
    config.schedule.beta_end = 0.012
    config.schedule.beta_schedule = "linear"      # or 'scaled_linear', 'squaredcos_cap_v2'
    config.schedule.set_alpha_to_one = True
    config.schedule.steps_offset = 1
    config.schedule.timestep_spacing = "leading"  # or 'trailing', 'linspace'
    config.schedule.prediction_type = "epsilon"   # or 'v_prediction', 'sample'
    config.schedule.clip_sample = False
    config.schedule.clip_sample_range = 1.0

    config.sampler = ml_collections.ConfigDict()
    config.sampler.num_steps = 25
    config.sampler.guidance_scale = 7.5           # empty prompt + zero image embedding
    config.sampler.eta = 0.0

    # Eq. 2: z^1 + beta_t eps' on the condition frame in training
    # (t4a_jax.diffusion.schedule.ConditionNoiseConfig documents the modes).
    config.condition_noise = ml_collections.ConfigDict()
    config.condition_noise.mode = "time_noise"    # 'off', 'time_noise', 'linear', 'sigma', 'beta'
    config.condition_noise.scale = 0.9977         # time_noise: the largest level
    config.condition_noise.mu_max = 1.5           # time_noise: logit-normal centre range
    config.condition_noise.power = 1.0            # time_noise: mu(t) ~ (t / T) ** power
    config.condition_noise.std = 1.0              # time_noise: logit-normal spread

    if arg == "animate3d":
        config.condition_noise.mode = "off"
    elif arg not in (None, "", "track4animate3d"):
        raise ValueError(f"configs/diffusion.py: unknown variant {arg!r} (known: "
                         f"'track4animate3d', 'animate3d')")
    return config
