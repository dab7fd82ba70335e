"""The discrete noise schedule of Stage One, forward noising, training targets, and the
condition-frame noise of Track4Animate3D (paper Eq. 2).

Conventions. Timesteps are integers in [0, T) (T = `num_train_timesteps`, 1000), one per
sample: `t` [N] against data [N, ...] (for Stage One latents [N, F, h, w, 4], channels
last, N = B*V object-views), or a scalar for all. `alphas_cumprod[t]` is the signal
fraction abar_t of the forward process `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`
(Eq. 1). Values equal diffusers' `DDPMScheduler` / `DDIMScheduler` with the same settings
(`tests/test_diffusion.py`); the arrays are computed in float64 and stored as float32.

The defaults are Animate3D's scheduler, `noise_scheduler_kwargs` in both
`configs/training/train.yaml` and `configs/inference/inference.yaml` of
yanqinJiang/Animate3D: 1000 steps, beta_schedule "linear" from 0.00085 to 0.012 (not
SD1.5's "scaled_linear"), steps_offset 1, clip_sample false, passed to diffusers'
`DDIMScheduler`, whose own defaults supply the rest: set_alpha_to_one true,
timestep_spacing "leading", prediction_type "epsilon".
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
CONDITION_NOISE_MODES = ("off", "time_noise", "linear", "sigma", "beta")


def _from_mapping(cls, config: ml_collections.ConfigDict | Mapping[str, Any] | None,
                  overrides: Mapping[str, Any]):
    """`cls(**config, **overrides)`; unknown keys raise ValueError naming them."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    values = {**(config or {}), **overrides}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Settings of the noise schedule and of the DDIM update; names and meanings follow
    diffusers' `DDIMScheduler` (defaults: Animate3D, see the module docstring).

    - `beta_schedule`: 'linear' (betas linear from beta_start to beta_end),
      'scaled_linear' (linear in sqrt(beta), SD1.5's own config) or 'squaredcos_cap_v2'
      (the cosine abar of Nichol & Dhariwal, betas capped at 0.999; ignores
      beta_start/beta_end).
    - `set_alpha_to_one`: the last DDIM step lands on abar = 1 (else on abar_0).
    - `steps_offset`, `timestep_spacing`: see `ddim.ddim_timesteps`.
    - `prediction_type`: what the network predicts, 'epsilon' (the noise),
      'v_prediction' (v = sqrt(abar) eps - sqrt(1 - abar) x_0) or 'sample' (x_0).
    - `clip_sample`: clip DDIM's predicted x_0 to +-clip_sample_range.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "linear"
    set_alpha_to_one: bool = True
    steps_offset: int = 1
    timestep_spacing: str = "leading"
    prediction_type: str = "epsilon"
    clip_sample: bool = False
    clip_sample_range: float = 1.0

    def __post_init__(self):
        for name, allowed in (("beta_schedule", BETA_SCHEDULES),
                              ("prediction_type", PREDICTION_TYPES),
                              ("timestep_spacing", TIMESTEP_SPACINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ScheduleConfig: {name}={getattr(self, name)!r}; expected "
                                 f"one of {allowed}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"ScheduleConfig: num_train_timesteps={self.num_train_timesteps} "
                             f"must be at least 2")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"ScheduleConfig: need 0 < beta_start <= beta_end < 1, got "
                             f"beta_start={self.beta_start}, beta_end={self.beta_end}")
        if self.steps_offset < 0:
            raise ValueError(f"ScheduleConfig: steps_offset={self.steps_offset} must be >= 0")

    @classmethod
    def from_config_dict(cls, config: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
                         **overrides) -> "ScheduleConfig":
        """From `configs/diffusion.py`'s `schedule` (or any mapping of these fields)."""
        return _from_mapping(cls, config, overrides)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["betas", "alphas_cumprod", "final_alpha_cumprod"],
                   meta_fields=["config"])
@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """The schedule's arrays (a pytree: pass it into `jax.jit`; `config` is static).

    betas [T], alphas_cumprod [T] (abar_t = prod_{s<=t} (1 - beta_s)) and
    final_alpha_cumprod [] (abar after the last DDIM step: 1, or abar_0), float32."""

    config: ScheduleConfig
    betas: jax.Array
    alphas_cumprod: jax.Array
    final_alpha_cumprod: jax.Array

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps


def _cosine_betas(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    """'squaredcos_cap_v2': beta_i = 1 - abar((i+1)/T) / abar(i/T), capped at max_beta,
    with abar(s) = cos^2((s + 0.008) / 1.008 * pi / 2)."""
    s = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    abar = np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def make_schedule(config: ScheduleConfig | ml_collections.ConfigDict | Mapping[str, Any]
                  | None = None, **overrides) -> NoiseSchedule:
    """The schedule for `config` (a `ScheduleConfig`, a config dict, or None for the
    defaults), with `overrides` applied: `make_schedule(beta_schedule='scaled_linear')`."""
    if isinstance(config, ScheduleConfig):
        config = dataclasses.replace(config, **overrides)
    else:
        config = ScheduleConfig.from_config_dict(config, **overrides)
    n = config.num_train_timesteps
    if config.beta_schedule == "linear":
        betas = np.linspace(config.beta_start, config.beta_end, n)
    elif config.beta_schedule == "scaled_linear":
        betas = np.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, n) ** 2
    else:
        betas = _cosine_betas(n)
    alphas_cumprod = np.cumprod(1.0 - betas)
    final = 1.0 if config.set_alpha_to_one else alphas_cumprod[0]
    return NoiseSchedule(config=config, betas=jnp.asarray(betas, jnp.float32),
                         alphas_cumprod=jnp.asarray(alphas_cumprod, jnp.float32),
                         final_alpha_cumprod=jnp.asarray(final, jnp.float32))


def per_sample(values: jax.Array, ndim: int) -> jax.Array:
    """Per-sample values [N] (or a scalar) shaped [N, 1, ..., 1] to broadcast against
    data of rank `ndim` [N, ...]."""
    values = jnp.asarray(values)
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def _signal_and_noise(schedule: NoiseSchedule, t: jax.Array, ndim: int, dtype: Any
                      ) -> tuple[jax.Array, jax.Array]:
    """(sqrt(abar_t), sqrt(1 - abar_t)) for timesteps t [N] or [], shaped to broadcast
    against [N, ...] data of rank `ndim`, in `dtype`."""
    abar = schedule.alphas_cumprod.astype(dtype)[jnp.asarray(t, jnp.int32)]
    return per_sample(jnp.sqrt(abar), ndim), per_sample(jnp.sqrt(1.0 - abar), ndim)


def add_noise(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array
              ) -> jax.Array:
    """The forward process (Eq. 1): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.
    x0, noise [N, ...]; t [N] or a scalar integer timestep."""
    signal, sigma = _signal_and_noise(schedule, t, x0.ndim, x0.dtype)
    return signal * x0 + sigma * noise


def velocity(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array
             ) -> jax.Array:
    """The v-prediction target v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0 (diffusers'
    `get_velocity`); shapes as in `add_noise`."""
    signal, sigma = _signal_and_noise(schedule, t, x0.ndim, x0.dtype)
    return signal * noise - sigma * x0


def target(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array
           ) -> jax.Array:
    """What the network is trained to output for x_t = add_noise(x0, noise, t), by
    `prediction_type`: the noise (Eq. 3), the velocity, or x0."""
    kind = schedule.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return velocity(schedule, x0, noise, t)
    return x0


# --- condition-frame noise (Eq. 2) ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConditionNoiseConfig:
    """The noise scale beta_t of Eq. 2, `z_t^1 = z_0^1 + beta_t eps'`, on the condition
    frame during training: larger at larger t, annealed as t decreases.

    The paper takes the idea from Zhao et al. 2024 ("Identifying and solving conditional
    image leakage", TimeNoise) and names the scale beta_t as that work's code does
    (thu-ml/cond-image-leakage, `get_beta_s`), so the default mode is TimeNoise: a random
    level per sample from a logit-normal distribution whose centre moves up with t,

        beta_t = scale * sigmoid(mu(t) + std * n),  n ~ N(0, 1),
        mu(t) = 2 * mu_max * (t / T) ** power - mu_max,

    with that work's settings for 1000-step VP models (its DynamiCrafter recipe: scale
    0.9977, mu_max 1.5, power 1, std 1), so the median level rises from 0.18 at t = 0 to
    0.82 at t = T. As in Eq. 2 (and unlike the VP recipe, which also scales z by
    sqrt(1 - beta^2)) the clean latent is not scaled. Other modes, all deterministic:

    - 'off': beta_t = 0, the condition stays clean (reproduces Animate3D);
    - 'linear': beta_t = scale * t / (T - 1);
    - 'sigma': beta_t = scale * sqrt(1 - abar_t), the frames' own noise level (Eq. 1);
    - 'beta': beta_t = scale * the schedule's beta_t (the literal reading of the symbol;
      at most 0.012 with the default schedule, i.e. almost clean).

    The paper applies Eq. 2 in training; sampling keeps the condition clean (DESIGN:
    frame 0 is reset to the clean condition latent after every step).
    """

    mode: str = "time_noise"
    scale: float = 0.9977
    mu_max: float = 1.5
    power: float = 1.0
    std: float = 1.0

    def __post_init__(self):
        if self.mode not in CONDITION_NOISE_MODES:
            raise ValueError(f"ConditionNoiseConfig: mode={self.mode!r}; expected one of "
                             f"{CONDITION_NOISE_MODES}")
        for name in ("scale", "power", "std"):
            if getattr(self, name) < 0:
                raise ValueError(f"ConditionNoiseConfig: {name}={getattr(self, name)} must be "
                                 f">= 0")

    @classmethod
    def from_config_dict(cls, config: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
                         **overrides) -> "ConditionNoiseConfig":
        """From `configs/diffusion.py`'s `condition_noise` (or any mapping of these fields)."""
        return _from_mapping(cls, config, overrides)


def condition_noise_scale(config: ConditionNoiseConfig, schedule: NoiseSchedule,
                          t: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """beta_t of Eq. 2 for integer timesteps t (any shape) -> float32 of t's shape.
    'time_noise' draws one level per element of t from `key` (required there, unused
    otherwise): pass one t per object for one level shared by its views."""
    t = jnp.asarray(t, jnp.int32)
    if config.mode == "off":
        return jnp.zeros(t.shape, jnp.float32)
    if config.mode == "linear":
        return config.scale * t.astype(jnp.float32) / (schedule.num_train_timesteps - 1)
    if config.mode == "sigma":
        return config.scale * jnp.sqrt(1.0 - schedule.alphas_cumprod[t])
    if config.mode == "beta":
        return config.scale * schedule.betas[t]
    if key is None:
        raise ValueError("condition_noise_scale: mode 'time_noise' draws a random level and "
                         "needs a PRNG key")
    fraction = t.astype(jnp.float32) / schedule.num_train_timesteps
    mu = 2.0 * config.mu_max * fraction ** config.power - config.mu_max
    n = jax.random.normal(key, t.shape, jnp.float32)
    return config.scale * jax.nn.sigmoid(mu + config.std * n)


def add_condition_noise(config: ConditionNoiseConfig, schedule: NoiseSchedule,
                        z1: jax.Array, noise: jax.Array, t: jax.Array,
                        key: jax.Array | None = None) -> jax.Array:
    """Eq. 2: z1 + beta_t * noise, for condition latents z1 and noise eps' [N, ...] (e.g.
    frame 0 of every object-view, [N, h, w, 4]) and timesteps t [N] or a scalar; `key`
    as in `condition_noise_scale`. Mode 'off' returns z1 itself."""
    if config.mode == "off":
        return z1
    scale = condition_noise_scale(config, schedule, t, key)
    return z1 + per_sample(scale, z1.ndim).astype(z1.dtype) * noise
