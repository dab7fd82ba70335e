"""The one view renderer (`t4a_jax.render.views`): the ring of cameras, renders equal to
`rasterize` itself, chunked cameras equal to all at once, and tile overflow that grows
(and keeps) the capacity or raises naming the capacity that would suffice."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from t4a_jax import render
from t4a_jax.render.builtin import builtin_object
from t4a_jax.render.views import TileOverflowError, ViewRenderer, ring_views

SIZE = 32


@pytest.fixture(scope="module")
def crowd() -> render.Gaussians:
    """40 overlapping Gaussians at the origin: every one lands on the centre tiles."""
    n = 40
    rng = np.random.default_rng(0)
    return render.Gaussians(
        means=jnp.asarray(rng.normal(size=(n, 3)) * 0.05, jnp.float32),
        quats=jnp.tile(jnp.array([1.0, 0, 0, 0]), (n, 1)),
        log_scales=jnp.full((n, 3), np.log(0.2), jnp.float32),
        opacity_logits=jnp.full((n,), -1.0),
        sh=render.sh_from_rgb(jnp.asarray(rng.uniform(size=(n, 3)), jnp.float32)))


def test_ring_views_are_the_animate3d_orbit():
    views = ring_views(4, elevation=15.0, size=SIZE, azimuth_start=10.0)
    np.testing.assert_allclose(views.azimuths, [10.0, 100.0, 190.0, 280.0])
    viewmats, ks, c2w = render.orbit_cameras(15.0, jnp.array([10.0, 100, 190, 280]),
                                             distance=3.0, fovy_degrees=40.0, width=SIZE,
                                             height=SIZE)
    for got, want in zip((views.viewmats, views.Ks, views.c2w), (viewmats, ks, c2w)):
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, np.asarray(want), atol=1e-6)
    with pytest.raises(ValueError, match="count=0"):
        ring_views(0, elevation=15.0, size=SIZE)


def test_renders_equal_rasterize():
    g = builtin_object()
    views = ring_views(3, elevation=20.0, size=SIZE)
    out = ViewRenderer(SIZE, SIZE, background=(0.2, 0.3, 0.4), tile_capacity=4096)(
        g, views.viewmats, views.Ks)
    colors, alphas, meta = render.rasterize(
        **g.activated(), viewmats=jnp.asarray(views.viewmats), Ks=jnp.asarray(views.Ks),
        width=SIZE, height=SIZE, sh_degree=g.sh_degree,
        backgrounds=jnp.tile(jnp.array([0.2, 0.3, 0.4]), (3, 1)), tile_capacity=4096)
    assert int(meta["overflow"].max()) == 0
    assert out.colors.shape == (3, SIZE, SIZE, 3) and out.alphas.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(out.colors, np.clip(np.asarray(colors), 0, 1), atol=1e-6)
    np.testing.assert_allclose(out.alphas, np.asarray(alphas)[..., 0], atol=1e-6)
    # (depth / alpha at faint pixels: float rounding of a differently padded tile list)
    np.testing.assert_allclose(out.depths, np.asarray(meta["expected_depths"])[..., 0],
                               rtol=5e-5, atol=1e-5)
    assert out.alphas.max() > 0.9 and out.alphas.min() < 0.01     # object and background


def test_chunks_of_cameras_equal_all_at_once():
    g = builtin_object()
    views = ring_views(5, elevation=10.0, size=SIZE)
    whole = ViewRenderer(SIZE, SIZE, tile_capacity=4096)(g, views.viewmats, views.Ks)
    chunked = ViewRenderer(SIZE, SIZE, tile_capacity=4096, cameras_per_step=2)(
        g, views.viewmats, views.Ks, progress="views")                 # 2 + 2 + (1, pad)
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape
        # (XLA fuses a batch of 2 and of 5 differently: depths ~3 differ in the last bits)
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_overflow_raises_naming_the_capacity_that_suffices(crowd):
    views = ring_views(2, elevation=0.0, size=16)
    with pytest.raises(TileOverflowError, match="tile_capacity=32 is too small; 40 would "
                                                "suffice") as info:
        ViewRenderer(16, 16, tile_capacity=32, overflow="raise")(crowd, views.viewmats,
                                                                 views.Ks)
    assert (info.value.capacity, info.value.needed) == (32, 40)
    assert list(info.value.views) == [0, 1]


def test_overflow_grows_keeps_the_capacity_and_is_exact(crowd):
    views = ring_views(2, elevation=0.0, size=16)
    renderer = ViewRenderer(16, 16, tile_capacity=32)                 # overflow="grow"
    grown = renderer(crowd, views.viewmats, views.Ks)
    assert renderer.tile_capacity == 128        # 1.15 x 40, rounded up to 128, kept
    ample = ViewRenderer(16, 16, tile_capacity=64, overflow="raise")(crowd, views.viewmats,
                                                                     views.Ks)
    for a, b in zip(grown, ample):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="overflow='clip'"):
        ViewRenderer(16, 16, overflow="clip")
    with pytest.raises(ValueError, match="cameras_per_step=0"):
        ViewRenderer(16, 16, cameras_per_step=0)
    with pytest.raises(ValueError, match=r"viewmats must be \[C, 4, 4\]"):
        ViewRenderer(16, 16)(builtin_object(), np.eye(4), np.eye(3))
