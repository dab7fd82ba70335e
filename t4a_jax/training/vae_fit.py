"""Fit a randomly initialised VAE to the training frames, so that a model trained from
random weights (the tiny demo) decodes latents to pictures of its data, not noise.

    vae, report = fit_autoencoder(vae, frames, steps=300)     # frames [N, H, W, 3] in [-1, 1]
    vae = cached_autoencoder(vae, frames_fn, folder, steps=300)   # fitted once per folder

The objective is the VAE's own: the mean squared error of decode(sample of the
posterior) against the frame plus `kl_weight` x the KL divergence of the posterior from
N(0, I) (small, as in Stable Diffusion's VAE training, so the latents stay informative);
Adam at `lr`, minibatches of `batch_size` frames drawn with replacement. After fitting,
`config.scaling_factor` is set to 1 / the standard deviation of the posterior means over
the frames (Stable Diffusion's 0.18215 was chosen the same way), so the diffusion model
sees latents of unit variance. `report`: {"psnr": of the decoded posterior means
against the frames, in dB, "loss_first", "loss_last", "scaling_factor"}.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from tqdm import tqdm

from t4a_jax.atomic import atomic_write
from t4a_jax.models import io as model_io
from t4a_jax.models.vae import AutoencoderKL

REPORT_FILE = "report.json"


def fit_autoencoder(vae: AutoencoderKL, frames: np.ndarray, *, steps: int,
                    batch_size: int = 32, lr: float = 2e-3, kl_weight: float = 1e-6,
                    seed: int = 0, progress: bool = True) -> tuple[AutoencoderKL, dict]:
    """A copy of `vae` fitted to `frames` [N, H, W, 3] in [-1, 1] (module docstring)."""
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"fit_autoencoder: frames {frames.shape}, expected [N, H, W, C]")
    graphdef, params, rest = nnx.split(vae, nnx.Param, ...)
    tx = optax.adam(lr)
    opt_state = tx.init(params)
    data = jnp.asarray(frames)

    def loss_fn(params, batch, key):
        model = nnx.merge(graphdef, params, rest)
        mean, logvar = model.encode(batch)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        decoded = model.decode(model.scale(z))
        kl = 0.5 * jnp.mean(jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1))
        return jnp.mean((decoded - batch) ** 2) + kl_weight * kl

    @jax.jit
    def step(params, opt_state, key):
        pick, noise = jax.random.split(key)
        batch = data[jax.random.randint(pick, (batch_size,), 0, data.shape[0])]
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, noise)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.key(seed)
    losses = []
    for i in tqdm(range(steps), desc="fit VAE", unit="step", disable=not progress,
                  leave=False):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
        losses.append(loss)
    fitted = nnx.merge(graphdef, params, rest)
    means = jnp.concatenate([fitted.encode(data[i:i + 64])[0]
                             for i in range(0, len(frames), 64)])
    fitted.config = dataclasses.replace(fitted.config, shift_factor=0.0,
                                        scaling_factor=float(1.0 / jnp.std(means)))
    decoded = jnp.concatenate([fitted.decode(fitted.scale(means[i:i + 64]))
                               for i in range(0, len(frames), 64)])
    mse = float(jnp.mean((jnp.clip(decoded, -1, 1) - data) ** 2)) / 4.0   # on [0, 1]
    losses = [float(v) for v in jax.device_get(losses)]
    report = {"psnr": float(-10 * np.log10(max(mse, 1e-12))),
              "loss_first": losses[0] if losses else None,
              "loss_last": losses[-1] if losses else None,
              "scaling_factor": fitted.config.scaling_factor, "steps": steps,
              "frames": len(frames)}
    return fitted, report


def cached_autoencoder(vae: AutoencoderKL, frames: Callable[[], np.ndarray], folder: str,
                       **fit_kwargs) -> tuple[AutoencoderKL, dict]:
    """The VAE fitted once into `folder` (`models.io` layout + report.json) and read back
    from there on later calls; `frames()` is called only when fitting."""
    report_path = os.path.join(folder, REPORT_FILE)
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8") as file:
            report = json.load(file)
        return model_io.load(os.path.join(folder, "vae")), report
    fitted, report = fit_autoencoder(vae, frames(), **fit_kwargs)
    os.makedirs(folder, exist_ok=True)
    model_io.save(fitted, os.path.join(folder, "vae"))
    with atomic_write(report_path) as file:
        file.write(json.dumps(report, indent=1).encode())
    logging.info("fitted the VAE to %d frames in %d steps: PSNR %.1f dB, scaling %.4g",
                 report["frames"], report["steps"], report["psnr"],
                 report["scaling_factor"])
    return fitted, report
