"""DDIM sampling (Song et al. 2021) as pure functions, and the jitted sampling loop with
classifier-free guidance and a clean condition frame.

Every step equals one call of diffusers' `DDIMScheduler.step` with the same settings
(`tests/test_diffusion.py`). Shapes: samples and model outputs [N, ...]; for Stage One
latents [N, F, h, w, 4] (channels last, N = B*V object-views, frame 0 the condition).
The sampler knows nothing about the model: it calls `denoise_fn(x, t, cond)`, a closure
the caller writes around the U-Net.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from t4a_jax.diffusion.schedule import NoiseSchedule, per_sample

DenoiseFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def ddim_timesteps(schedule: NoiseSchedule, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The `num_steps` timesteps of a DDIM run, high to low, and the timestep each step
    goes to, as int32 arrays [num_steps] (diffusers' `set_timesteps`):

    - 'leading': k * (T // n) + steps_offset for k = n-1 .. 0 (T = 1000, n = 25, offset 1:
      961, 921, ..., 1);
    - 'trailing': round(T - k * T / n) - 1 for k = 0 .. n-1 (999, 959, ..., 39);
    - 'linspace': round(linspace(0, T - 1, n)), reversed.

    The step from t goes to t - T // n whatever the spacing, as diffusers' DDIM does (for
    'linspace' that is not always the next timestep of the list); a negative target means
    the end of the chain, abar = `final_alpha_cumprod`.
    """
    total = schedule.num_train_timesteps
    if not 1 <= num_steps <= total:
        raise ValueError(f"ddim_timesteps: num_steps={num_steps} must be in [1, {total}]")
    spacing = schedule.config.timestep_spacing
    if spacing == "leading":
        timesteps = np.arange(num_steps)[::-1] * (total // num_steps) + schedule.config.steps_offset
    elif spacing == "trailing":
        timesteps = np.round(np.arange(total, 0, -total / num_steps)) - 1
    else:
        timesteps = np.linspace(0, total - 1, num_steps).round()[::-1]
    timesteps = timesteps.astype(np.int32)
    if timesteps[0] >= total:
        raise ValueError(f"ddim_timesteps: {num_steps} 'leading' steps with steps_offset="
                         f"{schedule.config.steps_offset} reach timestep {timesteps[0]} >= "
                         f"{total}")
    return timesteps, timesteps - total // num_steps


def _alphas(schedule: NoiseSchedule, t: jax.Array, t_prev: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
    """(abar_t, abar_{t_prev}), the latter `final_alpha_cumprod` where t_prev < 0."""
    t_prev = jnp.asarray(t_prev, jnp.int32)
    abar_t = schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]
    abar_prev = jnp.where(t_prev >= 0, schedule.alphas_cumprod[jnp.maximum(t_prev, 0)],
                          schedule.final_alpha_cumprod)
    return abar_t, abar_prev


def predict_x0_and_noise(schedule: NoiseSchedule, model_output: jax.Array,
                         sample: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x0, eps) implied by the network's output at x_t = `sample`, by `prediction_type`;
    model_output, sample [N, ...], t [N] or a scalar."""
    abar = per_sample(schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)], sample.ndim)
    signal, sigma = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
    kind = schedule.config.prediction_type
    if kind == "epsilon":
        return (sample - sigma * model_output) / signal, model_output
    if kind == "v_prediction":
        return signal * sample - sigma * model_output, signal * model_output + sigma * sample
    return model_output, (sample - signal * model_output) / sigma


def ddim_step(schedule: NoiseSchedule, model_output: jax.Array, t: jax.Array,
              t_prev: jax.Array, sample: jax.Array, *, eta: float = 0.0,
              noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """One DDIM update x_t -> x_{t_prev} (DDIM Eq. 12): returns (prev_sample, pred_x0).

    model_output, sample [N, ...]; t, t_prev integer [N] or scalars (t_prev < 0: the
    end of the chain). `eta` (a Python float >= 0) scales the stochastic part,
    sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)); eta > 0
    needs `noise` [N, ...] ~ N(0, I) (diffusers' `variance_noise`). pred_x0 is clipped
    to +-clip_sample_range when the schedule says `clip_sample`.
    """
    if eta < 0:
        raise ValueError(f"ddim_step: eta={eta} must be >= 0")
    if eta > 0 and noise is None:
        raise ValueError(f"ddim_step: eta={eta} > 0 needs `noise`")
    model_output = model_output.astype(sample.dtype)
    abar_t, abar_prev = _alphas(schedule, t, t_prev)
    abar_t, abar_prev = per_sample(abar_t, sample.ndim), per_sample(abar_prev, sample.ndim)
    pred_x0, pred_eps = predict_x0_and_noise(schedule, model_output, sample, t)
    if schedule.config.clip_sample:
        limit = schedule.config.clip_sample_range
        pred_x0 = jnp.clip(pred_x0, -limit, limit)
    variance = (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)
    std = eta * jnp.sqrt(variance)
    prev_sample = jnp.sqrt(abar_prev) * pred_x0 + jnp.sqrt(1.0 - abar_prev - std ** 2) * pred_eps
    if eta > 0:
        prev_sample = prev_sample + std * noise
    return prev_sample.astype(sample.dtype), pred_x0.astype(sample.dtype)


def classifier_free_guidance(uncond_output: jax.Array, cond_output: jax.Array,
                             guidance_scale: float | jax.Array) -> jax.Array:
    """uncond + guidance_scale * (cond - uncond) (1: the conditional output alone)."""
    return uncond_output + guidance_scale * (cond_output - uncond_output)


def _concat_branches(uncond: Any, cond: Any) -> Any:
    """The unconditional and conditional inputs as one batch, unconditional first."""
    return jax.tree.map(lambda u, c: jnp.concatenate([u, c], axis=0), uncond, cond)


def sample_ddim(denoise_fn: DenoiseFn, schedule: NoiseSchedule, latents: jax.Array,
                cond: Any, uncond: Any = None, *, num_steps: int = 25,
                guidance_scale: float | jax.Array = 7.5, eta: float = 0.0,
                condition_latent: jax.Array | None = None,
                rng: jax.Array | None = None,
                on_step: Callable[[jax.Array], None] | None = None,
                start_step: int = 0) -> jax.Array:
    """Run `num_steps` DDIM steps from the noise `latents` [N, ...] and return x_0.
    With `start_step` k > 0 the first k steps are skipped: `latents` are then x at the
    timestep of step k (`ddim_timesteps(schedule, num_steps)[0][k]`, e.g. a clean latent
    noised to it: SDEdit, Meng et al. 2022), and `on_step` sees k, ..., num_steps - 1.

    `denoise_fn(x [M, ...], t [M] int32, c) -> model output [M, ...]` where `c` is `cond`
    or, with classifier-free guidance, the batch [uncond; cond]: `cond` and `uncond` are
    pytrees of [N, ...] arrays with the same structure (e.g. {'text': [N, L, D],
    'image': [N, E], 'cameras': [N, 16]}). With `uncond`, each step makes one call on
    the 2N batch [x; x] and combines the halves with `classifier_free_guidance`; with
    `uncond=None` it makes one call on N and uses the output as is.

    `condition_latent` [N, h, w, C] (latents then [N, F, h, w, C]): frame 0 is set to
    it before the first step and after every step, so the network always sees the
    clean condition (Animate3D's sampling). `eta` > 0 needs `rng`; the step-i noise is
    drawn from `fold_in(rng, i)`.

    `on_step(i)`, when given, is called on the host (`jax.debug.callback`) with the
    index of each finished step, for progress displays; it may be called more than once
    per step (once per device), so it should be idempotent.

    The loop is one `lax.fori_loop`: `denoise_fn` is traced once, whatever `num_steps`.
    Call it under `jax.jit` (the pipeline does) to compile the whole run.
    """
    if eta > 0 and rng is None:
        raise ValueError(f"sample_ddim: eta={eta} > 0 needs `rng`")
    if not 0 <= start_step < num_steps:
        raise ValueError(f"sample_ddim: start_step={start_step} must be in [0, {num_steps})")
    if condition_latent is not None:
        expected = latents.shape[:1] + latents.shape[2:]
        if latents.ndim != 5 or condition_latent.shape != expected:
            raise ValueError(f"sample_ddim: condition_latent must be [N, h, w, C] = "
                             f"{list(expected)} for latents [N, F, h, w, C] = "
                             f"{list(latents.shape)}, got {list(condition_latent.shape)}")
        condition_latent = condition_latent.astype(latents.dtype)
    timesteps, prev_timesteps = (jnp.asarray(a) for a in ddim_timesteps(schedule, num_steps))
    n = latents.shape[0]
    guided = uncond is not None
    inputs = _concat_branches(uncond, cond) if guided else cond

    def reset_condition(x: jax.Array) -> jax.Array:
        return x if condition_latent is None else x.at[:, 0].set(condition_latent)

    def step(i: jax.Array, x: jax.Array) -> jax.Array:
        t, t_prev = timesteps[i], prev_timesteps[i]
        if guided:
            out = denoise_fn(jnp.concatenate([x, x], axis=0), jnp.full((2 * n,), t), inputs)
            out = classifier_free_guidance(out[:n], out[n:], guidance_scale)
        else:
            out = denoise_fn(x, jnp.full((n,), t), inputs)
        noise = (jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
                 if eta > 0 else None)
        x, _ = ddim_step(schedule, out, t, t_prev, x, eta=eta, noise=noise)
        x = reset_condition(x)
        if on_step is not None:
            jax.debug.callback(lambda index, _: on_step(index), i, x[:1, :1])
        return x

    return jax.lax.fori_loop(start_step, num_steps, step, reset_condition(latents))
