"""`rasterize` against the float64 brute-force NumPy renderer and finite differences."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reference_rasterizer import render_reference
from scenes import random_cameras, random_scene
from t4a_jax.render import rasterize

WIDTH, HEIGHT = 45, 37          # non-square, not a multiple of the tile size


def _render(scene, viewmats, ks, width=WIDTH, height=HEIGHT, **kwargs):
    return rasterize(**{k: jnp.asarray(v) for k, v in scene.items()},
                     viewmats=jnp.asarray(viewmats), Ks=jnp.asarray(ks),
                     width=width, height=height, **kwargs)


def _assert_matches_reference(scene, viewmats, ks, *, atol, width=WIDTH, height=HEIGHT,
                              **kwargs):
    colors, alphas, meta = _render(scene, viewmats, ks, width, height, **kwargs)
    assert int(jnp.max(meta["overflow"])) == 0, "capacity too small for an exact image"
    ref_colors, ref_alphas, ref_depths = render_reference(
        **scene, viewmats=viewmats, Ks=ks, width=width, height=height,
        sh_degree=kwargs.get("sh_degree"), backgrounds=kwargs.get("backgrounds"))
    np.testing.assert_allclose(colors, ref_colors, atol=atol, rtol=0)
    np.testing.assert_allclose(alphas, ref_alphas, atol=atol, rtol=0)
    np.testing.assert_allclose(meta["depths"], ref_depths, atol=4 * atol, rtol=0)
    return ref_alphas


@pytest.mark.parametrize("sh_degree", [None, 0, 1, 2, 3])
def test_matches_reference(sh_degree):
    scene = random_scene(seed=3 + (sh_degree or 0), sh_degree=sh_degree)
    viewmats, ks = random_cameras(seed=sh_degree or 0, count=3, width=WIDTH, height=HEIGHT)
    backgrounds = np.random.default_rng(0).uniform(size=(3, 3)).astype(np.float32)
    ref_alphas = _assert_matches_reference(scene, viewmats, ks, atol=1e-4,
                                           sh_degree=sh_degree, backgrounds=backgrounds,
                                           tile_capacity=256, batch_size=16)
    # The scene must exercise something: covered pixels, empty pixels, culled Gaussians.
    assert 0.2 < ref_alphas.mean() < 0.95
    assert (ref_alphas < 1e-3).any()
    cam = np.einsum("cij,nj->cni", viewmats[:, :3, :3], scene["means"]) + viewmats[:, None, :3, 3]
    assert (cam[..., 2] < 0.01).any(), "no Gaussian behind a camera"


def test_matches_reference_in_float64():
    with jax.enable_x64(True):
        scene = random_scene(seed=11, sh_degree=2, dtype=np.float64)
        viewmats, ks = random_cameras(seed=5, count=2, width=WIDTH, height=HEIGHT)
        _assert_matches_reference(scene, viewmats.astype(np.float64), ks.astype(np.float64),
                                  atol=1e-9, sh_degree=2, tile_capacity=256, batch_size=16)


def test_opaque_pileup_stops_pixels_at_transmittance_floor():
    # Many near-opaque Gaussians in front of each other: pixels must stop at T <= 1e-4,
    # including pixels whose stop falls in the middle of a batch.
    scene = random_scene(seed=21, n=300, spread=0.4)
    scene["opacities"] = np.full_like(scene["opacities"], 0.97)
    scene["scales"] = np.full_like(scene["scales"], 0.12)
    viewmats, ks = random_cameras(seed=2, count=2, width=WIDTH, height=HEIGHT)
    ref_alphas = _assert_matches_reference(scene, viewmats, ks, atol=1e-4,
                                           tile_capacity=512, batch_size=8)
    assert (ref_alphas > 0.999).mean() > 0.1   # T fell to ~1e-3: those pixels stopped


def test_opacity_aware_extent_reaches_every_contributing_pixel():
    # One nearly opaque, wide Gaussian: its alpha stays above 1/255 out to ~3.3 sigma,
    # beyond the classic 3-sigma box; small tiles make any box error visible.
    scene = dict(means=np.zeros((1, 3), np.float32), quats=np.array([[1, 0, 0, 0]], np.float32),
                 scales=np.array([[0.3, 0.15, 0.2]], np.float32),
                 opacities=np.array([1.0], np.float32), colors=np.ones((1, 3), np.float32))
    viewmats, ks = random_cameras(seed=7, count=1, width=64, height=64, fovy_degrees=60.0)
    _assert_matches_reference(scene, viewmats, ks, atol=1e-5, width=64, height=64,
                              tile_size=4, tile_capacity=8, batch_size=8)


def test_tile_size_and_batch_size_do_not_change_the_image():
    scene = random_scene(seed=5, sh_degree=1)
    viewmats, ks = random_cameras(seed=9, count=2, width=WIDTH, height=HEIGHT)
    a = _render(scene, viewmats, ks, sh_degree=1, tile_size=16, tile_capacity=256, batch_size=32)
    b = _render(scene, viewmats, ks, sh_degree=1, tile_size=8, tile_capacity=128, batch_size=4)
    np.testing.assert_allclose(a[0], b[0], atol=2e-6)
    np.testing.assert_allclose(a[1], b[1], atol=2e-6)


def test_overflow_counts_pairs_that_do_not_fit():
    scene = random_scene(seed=1, n=200)
    viewmats, ks = random_cameras(seed=1, count=2, width=WIDTH, height=HEIGHT)
    _, _, meta = _render(scene, viewmats, ks, tile_capacity=512, batch_size=1)
    needed = int(jnp.max(meta["max_tile_count"]))
    assert needed > 2
    assert np.all(np.asarray(meta["overflow"]) == 0)
    _, _, exact = _render(scene, viewmats, ks, tile_capacity=needed, batch_size=1)
    assert np.all(np.asarray(exact["overflow"]) == 0)
    _, _, short = _render(scene, viewmats, ks, tile_capacity=needed - 1, batch_size=1)
    assert int(jnp.max(short["overflow"])) >= 1
    _, _, tiny = _render(scene, viewmats, ks, tile_capacity=2, batch_size=1)
    assert int(jnp.sum(tiny["overflow"])) > int(jnp.sum(short["overflow"]))


def test_leading_camera_dims_jit_and_vmap():
    scene = random_scene(seed=2)
    viewmats, ks = random_cameras(seed=3, count=4, width=WIDTH, height=HEIGHT)
    flat = _render(scene, viewmats, ks, tile_capacity=256)
    grid = _render(scene, viewmats.reshape(2, 2, 4, 4), ks.reshape(2, 2, 3, 3), tile_capacity=256)
    assert grid[0].shape == (2, 2, HEIGHT, WIDTH, 3)
    assert grid[2]["overflow"].shape == (2, 2)
    np.testing.assert_allclose(grid[0].reshape(flat[0].shape), flat[0], atol=1e-5)

    params = {k: jnp.asarray(v) for k, v in scene.items()}
    render = functools.partial(rasterize, viewmats=jnp.asarray(viewmats), Ks=jnp.asarray(ks),
                               width=WIDTH, height=HEIGHT, tile_capacity=256)
    jitted = jax.jit(lambda p: render(**p)[0])(params)
    np.testing.assert_allclose(jitted, flat[0], atol=1e-5)
    # vmap over two scenes differing in opacity equals rendering them one by one.
    scaled = dict(params, opacities=params["opacities"] * 0.5)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, scaled)
    batched = jax.vmap(lambda p: render(**p)[0])(stacked)
    np.testing.assert_allclose(batched[0], flat[0], atol=1e-5)
    np.testing.assert_allclose(batched[1], render(**scaled)[0], atol=1e-5)
    # ... and so does vmap of grad.
    grad = jax.grad(lambda p: jnp.sum(render(**p)[0] ** 2))
    batched_grads = jax.vmap(grad)(stacked)
    for i, single in enumerate([params, scaled]):
        for name, value in grad(single).items():
            np.testing.assert_allclose(batched_grads[name][i], value, rtol=1e-4, atol=1e-5,
                                       err_msg=name)


def test_bad_inputs_name_the_argument():
    scene = {k: jnp.asarray(v) for k, v in random_scene(seed=0, n=10).items()}
    viewmats, ks = random_cameras(seed=0, count=1, width=8, height=8)
    cases = [
        (dict(scene, quats=scene["quats"][:, :3]), {}, "quats"),
        (dict(scene, opacities=scene["opacities"][:, None]), {}, "opacities"),
        (scene, dict(sh_degree=2), "colors"),
        (scene, dict(sh_degree=4), "sh_degree"),
        (scene, dict(viewmats=jnp.eye(4)), "viewmats"),
        (scene, dict(width=0), "width"),
    ]
    for inputs, overrides, name in cases:
        kwargs = dict(viewmats=jnp.asarray(viewmats), Ks=jnp.asarray(ks), width=8, height=8)
        kwargs.update(overrides)
        with pytest.raises(ValueError, match=name):
            rasterize(**inputs, **kwargs)


@pytest.mark.parametrize("sh_degree", [None, 2])
def test_gradients_match_finite_differences(sh_degree):
    width, height = 24, 20
    with jax.enable_x64(True):
        scene = random_scene(seed=13, n=25, sh_degree=sh_degree, dtype=np.float64)
        scene["opacities"] = np.minimum(scene["opacities"], 0.9)
        viewmats, ks = random_cameras(seed=4, count=2, width=width, height=height,
                                      fovy_degrees=60.0)
        rng = np.random.default_rng(0)
        weights = [jnp.asarray(rng.normal(size=s)) for s in
                   [(2, height, width, 3), (2, height, width, 1), (2, height, width, 1)]]
        backgrounds = jnp.asarray(rng.uniform(size=(2, 3)))

        def loss(params):
            colors, alphas, meta = rasterize(
                **params, viewmats=jnp.asarray(viewmats, jnp.float64),
                Ks=jnp.asarray(ks, jnp.float64), width=width, height=height,
                sh_degree=sh_degree, backgrounds=backgrounds, tile_size=8,
                tile_capacity=64, batch_size=8)
            return (jnp.sum(weights[0] * colors) + jnp.sum(weights[1] * alphas)
                    + 0.1 * jnp.sum(weights[2] * meta["depths"]))

        params = {k: jnp.asarray(v) for k, v in scene.items()}
        grads = jax.jit(jax.grad(loss))(params)
        loss_jit = jax.jit(loss)
        eps = 1e-6
        for name in params:
            assert np.all(np.isfinite(grads[name])), name
            for trial in range(2):
                direction = jnp.asarray(rng.normal(size=params[name].shape))
                plus = loss_jit(dict(params, **{name: params[name] + eps * direction}))
                minus = loss_jit(dict(params, **{name: params[name] - eps * direction}))
                numeric = float(plus - minus) / (2 * eps)
                analytic = float(jnp.sum(grads[name] * direction))
                assert abs(analytic) > 1e-3, f"{name}: gradient vanishes, test is void"
                np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6,
                                           err_msg=f"d loss / d {name}, trial {trial}")
