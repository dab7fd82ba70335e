"""The probe's matcher (`t4a_jax.tracking.feature_tracker`): on features that are a known
function of the surface (a texture field carried by the motion) it recovers the exact
tracks; on noise it scores low."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from t4a_jax.tracking.feature_tracker import similarity_maps, track_by_features
from t4a_jax.evaluation.tapvid import tapvid_metrics

SIZE = (48, 64)     # (H, W)


def _moving_texture(rng, views, frames, channels=8, size=SIZE):
    """Feature videos [V, F, H, W, C] whose frame k is a smooth random field shifted by
    an integer offset (dx, dy) per frame, and those offsets [V, F, 2]."""
    base = ndimage.gaussian_filter(rng.normal(size=(views,) + size + (channels,)),
                                   sigma=(0, 2, 2, 0), mode="wrap")
    offsets = np.cumsum(rng.integers(-2, 3, size=(views, frames, 2)), axis=1)
    offsets[:, 0] = 0
    video = np.stack([[np.roll(base[v], tuple(offsets[v, k, ::-1]), axis=(0, 1))
                       for k in range(frames)] for v in range(views)])
    return video.astype(np.float32), offsets


def test_recovers_tracks_of_features_that_move_with_the_surface():
    rng = np.random.default_rng(0)
    video, offsets = _moving_texture(rng, views=2, frames=5)
    queries = np.stack([rng.integers(12, 36, size=(2, 10)) + 0.5,
                        rng.integers(12, 30, size=(2, 10)) + 0.5], axis=-1)
    expected = queries[:, None] + offsets[:, :, None, :]
    tracks = jax.jit(track_by_features, static_argnums=(2, 3))(
        jnp.asarray(video), jnp.asarray(queries, jnp.float32), SIZE, None)
    np.testing.assert_allclose(np.asarray(tracks), expected, atol=1e-4)


def test_coarse_features_match_whole_cells():
    """Features on a 12 x 16 grid (4-px cells) that move by whole cells: queries at cell
    centres are tracked exactly."""
    rng = np.random.default_rng(1)
    coarse, offsets = _moving_texture(rng, views=1, frames=3, channels=16, size=(12, 16))
    queries = (np.array([[[4, 3], [10, 7], [7, 5]]]) + 0.5) * 4.0
    tracks = track_by_features(jnp.asarray(coarse), jnp.asarray(queries, jnp.float32),
                               SIZE, match_size=(12, 16))
    np.testing.assert_allclose(np.asarray(tracks), queries[:, None] + 4 * offsets[:, :, None],
                               atol=1e-4)


def test_noise_features_score_low():
    rng = np.random.default_rng(2)
    video, offsets = _moving_texture(rng, views=2, frames=5)
    noise = rng.normal(size=video.shape).astype(np.float32)
    queries = (rng.integers(8, 40, size=(2, 20, 2)) + 0.5).astype(np.float32)
    truth = queries[:, None] + offsets[:, :, None, :]
    visible = np.ones(truth.shape[:-1], bool)
    scores = {}
    for name, features in (("texture", video), ("noise", noise)):
        tracks = np.asarray(track_by_features(jnp.asarray(features), jnp.asarray(queries),
                                              SIZE, None))
        metrics = tapvid_metrics(np.zeros((2, 20), int), truth, visible, tracks, visible,
                                 SIZE)
        scores[name] = float(np.mean(metrics["average_pts_within_thresh"]))
    assert scores["texture"] > 0.95 and scores["noise"] < 0.3, scores


def test_similarity_maps_are_cosines():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(1, 2, 3, 4, 5)).astype(np.float32)
    descriptors = rng.normal(size=(1, 2, 5)).astype(np.float32)
    maps = np.asarray(similarity_maps(jnp.asarray(features), jnp.asarray(descriptors)))
    assert maps.shape == (1, 2, 2, 3, 4)
    f, p, y, x = 1, 1, 2, 3
    a, b = features[0, f, y, x], descriptors[0, p]
    np.testing.assert_allclose(maps[0, f, p, y, x],
                               a @ b / np.linalg.norm(a) / np.linalg.norm(b), rtol=1e-5)
