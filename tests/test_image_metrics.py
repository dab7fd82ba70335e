"""Image metrics against scikit-image's own PSNR and SSIM, and IoU by counting."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from t4a_jax.image_metrics import mask_iou, psnr, ssim


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(3, 2, 40, 37, 3))
    noisy = np.clip(clean + rng.normal(0.0, [[0.02], [0.1], [0.3]], (3, 2 * 40 * 37 * 3))
                    .reshape(clean.shape), 0.0, 1.0)
    return clean, noisy


def test_psnr_matches_skimage(images):
    clean, noisy = images
    ours = np.asarray(psnr(noisy, clean))
    assert ours.shape == (3, 2)
    reference = [[peak_signal_noise_ratio(c, n, data_range=1.0) for c, n in zip(cs, ns)]
                 for cs, ns in zip(clean, noisy)]
    np.testing.assert_allclose(ours, reference, rtol=1e-5)
    assert np.isinf(psnr(clean[0, 0], clean[0, 0]))


def test_ssim_matches_skimage_gaussian_ssim(images):
    clean, noisy = images
    ours = np.asarray(ssim(noisy, clean))
    reference = [[structural_similarity(n, c, channel_axis=-1, data_range=1.0,
                                        gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
                  for c, n in zip(cs, ns)] for cs, ns in zip(clean, noisy)]
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    assert ours[0].min() > ours[1].max() > ours[2].max()      # more noise, lower SSIM
    np.testing.assert_allclose(ssim(clean[0], clean[0]), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="smaller than the 11-pixel window"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


def test_mask_iou_counts_intersection_over_union():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=(2, 4, 16, 16)) > 0.5
    expected = (a & b).sum(axis=(1, 2)) / (a | b).sum(axis=(1, 2))
    np.testing.assert_allclose(mask_iou(a, b), expected, rtol=1e-6)
    empty = np.zeros((16, 16), bool)
    assert float(mask_iou(empty, empty)) == 1.0 and float(mask_iou(empty, a[0])) == 0.0
