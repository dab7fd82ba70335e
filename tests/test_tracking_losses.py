"""Tracking supervision (`t4a_jax.tracking.queries`, `.losses`) against direct float64
NumPy loops of the paper's formulas (Eqs. 4-5), SciPy's bilinear interpolation for the
descriptors, and behaviour on features that do or do not follow the tracks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from t4a_jax.tracking import losses
from t4a_jax.tracking.queries import draw_points

IMAGE = (64, 96)           # (H, W) pixels
FEATURE = (4, 6)           # (h, w): 16 px per cell


def _random_case(seed=0, b=2, v=2, f=3, p=4, c=5):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(b, v, f) + FEATURE + (c,))
    tracks = rng.uniform(0, 1, size=(b, v, f, p, 2)) * np.array([IMAGE[1], IMAGE[0]])
    visible = rng.uniform(size=(b, v, f, p)) < 0.7
    return features, tracks, visible


def test_draw_points_takes_valid_queries_without_replacement():
    rng = np.random.default_rng(0)
    b, v, f, n = 2, 3, 4, 30
    valid = rng.uniform(size=(b, v, n)) < 0.5
    valid[1, 2] = False
    valid[1, 2, [4, 9, 17]] = True                       # a view with only 3 valid
    tracks = rng.normal(size=(b, v, f, n, 2)).astype(np.float32)
    visibility = rng.uniform(size=(b, v, f, n)) < 0.8
    drawn = jax.jit(draw_points, static_argnums=4)(jax.random.key(1), valid, tracks,
                                                   visibility, 8)
    assert drawn.tracks.shape == (b, v, f, 8, 2) and drawn.visible.shape == (b, v, f, 8)
    for i in range(b):
        for j in range(v):
            # Identify each drawn point by its track (tracks are distinct random values).
            picked = [int(np.argmin(np.abs(tracks[i, j, 0, :, 0] - x)))
                      for x in np.asarray(drawn.tracks[i, j, 0, :, 0])]
            np.testing.assert_array_equal(np.asarray(drawn.tracks[i, j]),
                                          tracks[i, j][:, picked])
            chosen_valid = [k for k in picked if valid[i, j, k]]
            assert len(set(chosen_valid)) == len(chosen_valid)            # no repeats
            assert len(chosen_valid) == min(8, valid[i, j].sum())
            expected_visible = visibility[i, j][:, picked] & valid[i, j, picked][None]
            np.testing.assert_array_equal(np.asarray(drawn.visible[i, j]), expected_visible)
    assert int(np.asarray(drawn.visible[1, 2]).any(axis=0).sum()) <= 3


def test_draw_points_is_uniform_over_valid_queries():
    valid = np.zeros((1, 1, 20), bool)
    valid[0, 0, :10] = True
    tracks = np.broadcast_to(np.arange(20.0)[None, None, None, :, None], (1, 1, 1, 20, 2))
    draw = jax.jit(jax.vmap(lambda k: draw_points(k, valid, tracks, np.ones((1, 1, 1, 20),
                                                                            bool), 4).tracks))
    picked = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))[..., 0].ravel()
    counts = np.bincount(picked.astype(int), minlength=20)
    assert counts[10:].sum() == 0
    np.testing.assert_allclose(counts[:10] / 4000, 0.4, atol=0.04)   # 4 of 10 each time


def test_descriptors_match_scipy_bilinear_interpolation():
    features, tracks, _ = _random_case()
    ours = np.asarray(losses.sample_descriptors(jnp.asarray(features), jnp.asarray(tracks),
                                                IMAGE))
    b, v, f, p, _ = tracks.shape
    scale = np.array([FEATURE[1] / IMAGE[1], FEATURE[0] / IMAGE[0]])
    for index in np.ndindex(b, v, f, p):
        x, y = tracks[index] * scale - 0.5                       # cell-centre grid
        for ch in range(features.shape[-1]):
            expected = ndimage.map_coordinates(features[index[:3]][..., ch], [[y], [x]],
                                               order=1, mode="nearest")[0]
            assert abs(ours[index][ch] - expected) < 1e-5, (index, ch)


def test_correspondence_loss_matches_equation_4():
    features, tracks, visible = _random_case(1)
    descriptors = np.asarray(losses.sample_descriptors(jnp.asarray(features),
                                                       jnp.asarray(tracks), IMAGE),
                             np.float64)
    total, count = 0.0, 0
    b, v, f, p, _ = descriptors.shape
    for i, j, k, q in np.ndindex(b, v, f - 1, p):
        if visible[i, j, k, q] and visible[i, j, k + 1, q]:
            a, c = descriptors[i, j, k, q], descriptors[i, j, k + 1, q]
            total += 1 - a @ c / (np.linalg.norm(a) * np.linalg.norm(c))
            count += 1
    ours = losses.correspondence_loss(jnp.asarray(descriptors), jnp.asarray(visible))
    assert count > 0
    np.testing.assert_allclose(float(ours), total / count, rtol=1e-5)


def test_position_loss_matches_equation_5():
    features, tracks, visible = _random_case(2)
    temperature = 0.3
    descriptors = np.asarray(losses.sample_descriptors(jnp.asarray(features),
                                                       jnp.asarray(tracks), IMAGE),
                             np.float64)
    h, w = FEATURE
    centres = [((x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1)
               for y in range(h) for x in range(w)]
    total, count = 0.0, 0
    b, v, f, p, _ = descriptors.shape
    for i, j, k, q in np.ndindex(b, v, f, p):
        if k == 0 or not (visible[i, j, 0, q] and visible[i, j, k, q]):
            continue
        ref = descriptors[i, j, 0, q]
        cells = features[i, j, k].reshape(h * w, -1)
        cos = cells @ ref / (np.linalg.norm(cells, axis=1) * np.linalg.norm(ref))
        weights = np.exp(cos / temperature) / np.exp(cos / temperature).sum()
        predicted = weights @ np.array(centres)
        target = tracks[i, j, k, q] / np.array([IMAGE[1], IMAGE[0]]) * 2 - 1
        for d in target - predicted:
            total += 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
        count += 1
    ours = losses.position_loss(jnp.asarray(features), jnp.asarray(descriptors),
                                jnp.asarray(tracks), jnp.asarray(visible), IMAGE,
                                temperature=temperature)
    np.testing.assert_allclose(float(ours), total / count, rtol=1e-5)


def test_huber_matches_torch_definition():
    x = np.linspace(-3, 3, 61)
    expected = np.where(np.abs(x) < 1.5, 0.5 * x ** 2, 1.5 * (np.abs(x) - 0.75))
    np.testing.assert_allclose(np.asarray(losses.huber(jnp.asarray(x), 1.5)), expected,
                               rtol=1e-6)


def _surface_features(tracks_cells, codes):
    """Features whose cell (y, x) of frame k holds the code of the point sitting there
    (one-hot codes, orthogonal) and a weak background elsewhere."""
    b, v, f, p, _ = tracks_cells.shape
    features = np.full((b, v, f) + FEATURE + (codes.shape[1],), 0.01)
    for i, j, k, q in np.ndindex(b, v, f, p):
        x, y = tracks_cells[i, j, k, q]
        features[i, j, k, y, x] = codes[q]
    return features


@pytest.mark.parametrize("follow", [True, False])
def test_losses_vanish_on_features_that_follow_the_tracks(follow):
    rng = np.random.default_rng(3)
    b, v, f, p = 1, 2, 4, 3
    cells = np.stack([rng.permutation(FEATURE[1] * FEATURE[0])[:p] for _ in
                      range(b * v * f)]).reshape(b, v, f, p)
    cells_xy = np.stack([cells % FEATURE[1], cells // FEATURE[1]], axis=-1)
    codes = np.eye(p)
    features = _surface_features(cells_xy, codes)
    cell_px = np.array([IMAGE[1] / FEATURE[1], IMAGE[0] / FEATURE[0]])
    tracks = (cells_xy + 0.5) * cell_px                       # cell centres in pixels
    if not follow:          # frame k's "track" sits on another point: roll by k
        tracks = np.stack([np.roll(tracks[:, :, k], k, axis=2) for k in range(f)], axis=2)
    visible = np.ones((b, v, f, p), bool)
    jf, jt, jv = jnp.asarray(features), jnp.asarray(tracks), jnp.asarray(visible)
    descriptors = losses.sample_descriptors(jf, jt, IMAGE)
    corr = float(losses.correspondence_loss(descriptors, jv))
    pos = float(losses.position_loss(jf, descriptors, jt, jv, IMAGE, temperature=0.01))
    if follow:
        assert corr < 1e-6 and pos < 1e-6, (corr, pos)
    else:
        assert corr > 0.5 and pos > 0.05, (corr, pos)


def test_invisible_points_do_not_count_and_gradients_are_finite():
    features, tracks, visible = _random_case(4)
    jf, jt = jnp.asarray(features, jnp.float32), jnp.asarray(tracks, jnp.float32)

    def total(features, visible):
        d = losses.sample_descriptors(features, jt, IMAGE)
        return (losses.correspondence_loss(d, visible)
                + losses.position_loss(features, d, jt, visible, IMAGE))

    def total_at(tracks):
        t = jnp.asarray(tracks, jnp.float32)
        d = losses.sample_descriptors(jf, t, IMAGE)
        return (losses.correspondence_loss(d, jnp.asarray(visible))
                + losses.position_loss(jf, d, t, jnp.asarray(visible), IMAGE))

    # Where the tracker says a point is unseen, its tracked position must not matter.
    moved = np.where(visible[..., None], tracks, tracks + 17.0)
    np.testing.assert_allclose(float(total_at(moved)), float(total_at(tracks)), rtol=1e-6)
    assert float(total_at(tracks + 5.0)) != float(total_at(tracks))
    grads = jax.grad(total)(jf, jnp.asarray(visible))
    assert np.isfinite(np.asarray(grads)).all() and np.abs(np.asarray(grads)).sum() > 0
    nothing = total(jf, jnp.zeros_like(jnp.asarray(visible)))
    assert float(nothing) == 0.0
