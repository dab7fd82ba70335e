"""Image reconstruction metrics: PSNR, SSIM and mask IoU, batched over leading dims.

    psnr(images, targets)           # [...]  dB, images [..., H, W, C] in [0, 1]
    ssim(images, targets)           # [...]  Wang et al. 2004
    mask_iou(masks, target_masks)   # [...]  masks [..., H, W] bool

SSIM is the standard one (as `skimage.metrics.structural_similarity` with
`gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1`): local
means, variances and covariance under an 11 x 11 Gaussian window of sigma 1.5
(truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, the SSIM map averaged over the
positions where the window lies inside the image and over the channels. PSNR of
identical images is +inf; the IoU of two empty masks is 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(images: ArrayLike, targets: ArrayLike, data_range: float = 1.0) -> jax.Array:
    """Peak signal-to-noise ratio [...] in dB over the last three axes [H, W, C]."""
    images, targets = jnp.asarray(images, jnp.float32), jnp.asarray(targets, jnp.float32)
    mse = jnp.mean(jnp.square(images - targets), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(data_range ** 2 / mse)


def _gaussian_window() -> jax.Array:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    w = jnp.exp(-0.5 * jnp.square(x / SSIM_SIGMA))
    return w / jnp.sum(w)


def _filter(x: jax.Array, window: jax.Array) -> jax.Array:
    """Separable 'valid' filtering of x [B, H, W] by `window` along H and W."""
    k = len(window)
    rows = sum(window[i] * x[:, i:x.shape[1] - k + 1 + i] for i in range(k))
    return sum(window[i] * rows[:, :, i:x.shape[2] - k + 1 + i] for i in range(k))


def ssim(images: ArrayLike, targets: ArrayLike, data_range: float = 1.0) -> jax.Array:
    """Mean SSIM [...] of images [..., H, W, C] against targets (module docstring);
    H and W must be at least 11."""
    images, targets = jnp.asarray(images, jnp.float32), jnp.asarray(targets, jnp.float32)
    window = _gaussian_window()
    *lead, h, w, c = images.shape
    if min(h, w) < len(window):
        raise ValueError(f"ssim: images of {h}x{w} are smaller than the {len(window)}-pixel "
                         f"window")
    flat = lambda x: jnp.moveaxis(x, -1, -3).reshape(-1, h, w)
    x, y = flat(images), flat(targets)
    mu_x, mu_y = _filter(x, window), _filter(y, window)
    var_x = _filter(x * x, window) - mu_x ** 2
    var_y = _filter(y * y, window) - mu_y ** 2
    cov = _filter(x * y, window) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
         / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
    return jnp.mean(s.reshape(*lead, c, -1), axis=(-2, -1))


def mask_iou(masks: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Intersection over union [...] of bool masks [..., H, W]."""
    masks, targets = jnp.asarray(masks, bool), jnp.asarray(targets, bool)
    inter = jnp.sum(masks & targets, axis=(-2, -1))
    union = jnp.sum(masks | targets, axis=(-2, -1))
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)
