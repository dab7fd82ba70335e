"""4D-SDS (paper Eq. 11), in Animate3D's z0-reconstruction form, over a denoise function.

    loss = sds_loss(latents, denoise, schedule, key)          # latents [B, F, h, w, c]

For each of the B object-views one timestep t ~ U[t_min, t_max] (all its frames share
it, as in Stage One) and noise eps ~ N(0, I): z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps;
frame 0, the condition frame, is given to the denoiser clean (as the Stage One sampler
does: it resets frame 0 to the condition latent). The denoiser's estimate of the clean
latent, z0_hat = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), is a fixed target
(no gradient flows through the denoiser), and

    L_4D-SDS = mean over b, frames 1..F-1 and latent elements of (z - stopgrad(z0_hat))^2,

so dL/dtheta = 2 (z - z0_hat) dz/dtheta / count. A denoiser that predicts exactly the
added noise gives z0_hat = z: zero loss, zero gradient. `denoise(z_t, t)` -> eps_hat
[B, F, h, w, c] is whatever the caller builds: the Stage One U-Net with classifier-free
guidance (`t4a_jax.reconstruction.priors`), a stand-in in tests.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from t4a_jax.diffusion.schedule import NoiseSchedule, add_noise

Denoise = Callable[[jax.Array, jax.Array], jax.Array]


def sds_loss(latents: jax.Array, denoise: Denoise, schedule: NoiseSchedule, key: jax.Array,
             *, t_min: int = 20, t_max: int = 200) -> jax.Array:
    """L_4D-SDS of latents [B, F, h, w, c] (module docstring); t in [t_min, t_max]."""
    if latents.ndim != 5 or latents.shape[1] < 2:
        raise ValueError(f"sds_loss: latents must be [B, F >= 2, h, w, c], got {latents.shape}")
    t_key, noise_key = jax.random.split(key)
    b = latents.shape[0]
    t = jax.random.randint(t_key, (b,), t_min, t_max + 1)
    noise = jax.random.normal(noise_key, latents.shape, latents.dtype)
    clean = jax.lax.stop_gradient(latents)
    noisy = add_noise(schedule, clean, noise, t).at[:, 0].set(clean[:, 0])
    eps = jax.lax.stop_gradient(denoise(noisy, t))
    abar = schedule.alphas_cumprod[t].astype(latents.dtype)[:, None, None, None, None]
    z0 = (noisy - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
    return jnp.mean(jnp.square(latents[:, 1:] - jax.lax.stop_gradient(z0[:, 1:])))
