"""`training.vae_fit`: a random tiny VAE fitted to synthetic frames reconstructs them
(its decoded posterior means beat the random VAE's by a wide margin), its latents get
unit variance through the scaling factor, and the cached fit is read back as fitted."""

from __future__ import annotations

import numpy as np
from flax import nnx

from t4a_jax.data import procedural
from t4a_jax.models.vae import AutoencoderKL, VAEConfig
from t4a_jax.render.views import ViewRenderer, ring_views
from t4a_jax.training.vae_fit import cached_autoencoder, fit_autoencoder


def _frames() -> np.ndarray:
    """[16, 16, 16, 3] in [-1, 1]: 4 creatures in 4 views."""
    views = ring_views(4, elevation=15.0, size=16)
    renderer = ViewRenderer(16, 16, background=0.5)
    images = [renderer(procedural.make_creature(seed, 1024).gaussians, views.viewmats,
                       views.Ks).colors for seed in range(4)]
    return np.concatenate(images).astype(np.float32) * 2 - 1


def _psnr(vae: AutoencoderKL, frames: np.ndarray) -> float:
    mean, _ = vae.encode(frames)
    decoded = np.clip(np.asarray(vae.decode(vae.scale(mean))), -1, 1)
    return float(-10 * np.log10(np.mean((decoded - frames) ** 2) / 4))


def test_fitted_vae_reconstructs_and_scales_its_latents_to_unit_variance(tmp_path):
    frames = _frames()
    vae = AutoencoderKL(VAEConfig.tiny(), rngs=nnx.Rngs(0))
    before = _psnr(vae, frames)
    fitted, report = fit_autoencoder(vae, frames, steps=150, batch_size=8, progress=False)
    after = _psnr(fitted, frames)
    assert after > before + 8 and after > 20, (before, after)
    np.testing.assert_allclose(report["psnr"], after, atol=1e-3)
    mean, _ = fitted.encode(frames)
    np.testing.assert_allclose(np.std(np.asarray(fitted.scale(mean))), 1.0, rtol=1e-3)
    assert report["loss_last"] < report["loss_first"]
    # The original keeps its weights (a fitted copy is returned).
    assert abs(_psnr(vae, frames) - before) < 1e-4

    calls = []
    cached, cached_report = cached_autoencoder(
        vae, lambda: calls.append(1) or frames, str(tmp_path / "fit"), steps=20,
        batch_size=8, progress=False)
    again, again_report = cached_autoencoder(
        vae, lambda: calls.append(1) or frames, str(tmp_path / "fit"), steps=20,
        batch_size=8, progress=False)
    assert calls == [1] and again_report == cached_report
    assert again.config.scaling_factor == cached.config.scaling_factor
    np.testing.assert_allclose(_psnr(again, frames), _psnr(cached, frames), atol=1e-5)
