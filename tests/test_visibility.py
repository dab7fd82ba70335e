"""Tests for `t4a_jax.render.visibility`: the pinhole round trip and the two Gaussian
tests judged by the rasterizer itself (its alphas, and per-Gaussian weights read off
renders with one-hot colours through `ViewRenderer`), plus the compositor's alpha law
on NumPy and JAX."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from t4a_jax.render.composite import MAX_ALPHA, conic_power, splat_alpha
from t4a_jax.render.gaussians import Gaussians, logit, sh_from_rgb
from t4a_jax.render.views import ViewRenderer, ring_views
from t4a_jax.render.visibility import (dominant_gaussians, facing, front_transmittance,
                                       project_points, unproject)

SIZE = 32


def _scene(n: int, seed: int = 0) -> Gaussians:
    """n overlapping anisotropic Gaussians near the origin, opacities 0.3-0.9."""
    rng = np.random.default_rng(seed)
    return Gaussians(
        means=jnp.asarray(rng.normal(size=(n, 3)) * 0.25, jnp.float32),
        quats=jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
        log_scales=jnp.asarray(rng.normal(size=(n, 3)) * 0.3 - 1.8, jnp.float32),
        opacity_logits=logit(jnp.asarray(rng.uniform(0.3, 0.9, n), jnp.float32)),
        sh=sh_from_rgb(jnp.asarray(rng.uniform(size=(n, 3)), jnp.float32)))


def _pixel_centres(views: int) -> np.ndarray:
    """Every pixel centre (x, y) of each view, row-major: [V, SIZE * SIZE, 2]."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    grid = np.stack([xs.ravel(), ys.ravel()], -1) + 0.5
    return np.broadcast_to(grid, (views,) + grid.shape).astype(np.float32)


def _render(gaussians: Gaussians, views, rgb: np.ndarray):
    """(colours [V, S, S, 3] on black, alphas [V, S, S]) with colours `rgb` [N, 3]."""
    renderer = ViewRenderer(SIZE, SIZE, background=0.0, overflow="raise", tile_capacity=64)
    out = renderer(gaussians.replace(sh=sh_from_rgb(jnp.asarray(rgb, jnp.float32))),
                   views.viewmats, views.Ks)
    return out.colors, out.alphas


def test_project_points_inverts_unproject_and_depth_is_camera_z():
    views = ring_views(3, elevation=20.0, size=SIZE, azimuth_start=10.0)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, SIZE, size=(3, 50, 2))
    depth = rng.uniform(2.0, 4.0, size=(3, 50))
    points = unproject(pixels, depth, views.viewmats, views.Ks)
    xy, z = project_points(points, views.viewmats, views.Ks)
    np.testing.assert_allclose(xy, pixels, atol=1e-4)
    np.testing.assert_allclose(z, depth, atol=1e-5)
    # Leading dims broadcast; the origin, which every ring view looks at, is the centre.
    xy, z = project_points(np.zeros((2, 3, 1, 3)), views.viewmats, views.Ks)
    assert xy.shape == (2, 3, 1, 2)
    np.testing.assert_allclose(xy, SIZE / 2, atol=1e-4)
    np.testing.assert_allclose(z, 3.0, atol=1e-5)


def test_facing_is_the_cosine_to_the_camera():
    views = ring_views(2, elevation=0.0, size=SIZE)
    centres = views.c2w[:, :3, 3]                                   # [2, 3]
    points = np.zeros((2, 2, 3))
    normals = np.stack([centres / 3.0, -centres / 3.0], axis=1)     # towards, away
    np.testing.assert_allclose(facing(points, normals, centres), [[1, -1], [1, -1]],
                               atol=1e-6)


def test_front_transmittance_of_everything_is_one_minus_the_rendered_alpha():
    gaussians, views = _scene(40), ring_views(2, elevation=20.0, size=SIZE)
    _, alphas = _render(gaussians, views, np.zeros((40, 3)))
    assert alphas.max() > 0.9 and alphas.min() < 0.01
    pixels = _pixel_centres(2)
    everything = front_transmittance(gaussians, views.viewmats, views.Ks, SIZE, SIZE,
                                     pixels, np.full(pixels.shape[:2], 100.0), margin=0.0)
    rendered = 1.0 - alphas.reshape(2, -1)
    # The rasterizer stops a pixel before its transmittance reaches 1e-4; the test does
    # not (it may only find less light there).
    open_ = rendered > 1e-3
    assert open_.mean() > 0.5 and (~open_).any()
    np.testing.assert_allclose(everything[open_], rendered[open_], atol=2e-5)
    assert (everything[~open_] <= rendered[~open_] + 2e-5).all()
    # Nothing lies in front of the camera's near plane, and `where` skips points.
    nothing = front_transmittance(gaussians, views.viewmats, views.Ks, SIZE, SIZE, pixels,
                                  np.full(pixels.shape[:2], 1.0), margin=0.0)
    np.testing.assert_array_equal(nothing, 1.0)
    some = np.zeros(pixels.shape[:2], bool)
    some[1, ::7] = True
    skipped = front_transmittance(gaussians, views.viewmats, views.Ks, SIZE, SIZE, pixels,
                                  np.full(pixels.shape[:2], 100.0), margin=0.0, where=some)
    np.testing.assert_array_equal(skipped[~some], 1.0)
    np.testing.assert_allclose(skipped[some], everything[some], atol=1e-6)


def test_dominant_gaussian_has_the_largest_rendered_weight():
    """Gaussian i's weight alpha_i T_i at every pixel is the red channel of a render in
    which it alone is red (on black); the dominant Gaussian is the argmax of these."""
    n = 12
    gaussians, views = _scene(n, seed=1), ring_views(2, elevation=20.0, size=SIZE)
    weights = np.stack([_render(gaussians, views, np.eye(n, 3, k=-i))[0][..., 0]
                        for i in range(n)])                          # [n, V, S, S]
    weights = weights.reshape(n, 2, -1)
    index, depth = dominant_gaussians(gaussians, views.viewmats, views.Ks, SIZE, SIZE,
                                      _pixel_centres(2))
    top = np.sort(weights, axis=0)
    clear = top[-1] - top[-2] > 1e-3                                # no near ties
    reached = top[-1] > 1e-3
    assert (clear & reached).mean() > 0.3 and (~reached).mean() > 0.1
    np.testing.assert_array_equal(index[clear & reached],
                                  np.argmax(weights, axis=0)[clear & reached])
    assert (index[top[-1] == 0] == -1).all()
    _, centre_depth = project_points(
        np.broadcast_to(np.asarray(gaussians.means), (2, n, 3)), views.viewmats, views.Ks)
    seen = index >= 0
    np.testing.assert_allclose(depth[seen],
                               np.take_along_axis(centre_depth, index, axis=1)[seen],
                               atol=1e-5)


def test_alpha_law_is_the_same_on_numpy_and_jax():
    rng = np.random.default_rng(0)
    conics = np.abs(rng.normal(size=(100, 3))).astype(np.float32)
    dx, dy = (rng.normal(size=100).astype(np.float32) for _ in range(2))
    opacity = rng.uniform(0.0, 1.0, 100).astype(np.float32)
    power = conic_power(conics, dx, dy)
    alpha = splat_alpha(opacity, power)
    assert isinstance(alpha, np.ndarray)
    jax_alpha = splat_alpha(jnp.asarray(opacity), conic_power(jnp.asarray(conics),
                                                               jnp.asarray(dx),
                                                               jnp.asarray(dy)))
    np.testing.assert_allclose(np.asarray(jax_alpha), alpha, rtol=1e-6)
    assert splat_alpha(np.float32(1.0), np.float32(0.0)) == pytest.approx(MAX_ALPHA)
