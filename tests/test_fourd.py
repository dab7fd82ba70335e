"""Stage Two's pieces (`t4a_jax.fourd`): HexPlane sampling against a float64 NumPy
bilinear reference (borders, time ends), the field's product / concatenation and time
mapping, a new motion field leaving the static asset bit for bit unmoved, 4D SH (w = 1 is
static SH; a colour that changes in time is fitted with w > 1 and not with w = 1),
Kabsch against SciPy (reflections fixed), ARAP zero for rigid motions and positive for
a stretch, exact nearest neighbours, finite gradients through deform + render, the
reconstruction loss against its formula, progressive frames, per-group learning rates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.spatial.transform import Rotation

from t4a_jax.fourd import (HexPlaneConfig, MotionConfig, OptimizerConfig, arap_loss, deform,
                           draw_frames, frames_in_play, hexplane_features, init_hexplane,
                           init_motion_field, init_sh4d, kabsch, make_optimizer,
                           nearest_neighbours, plane_total_variation, reconstruction_loss,
                           render_frames, sample_plane, sh_at, time_smoothness)
from t4a_jax.fourd.hexplane import PLANE_AXES
from t4a_jax.render import rasterize
from t4a_jax.render.builtin import builtin_object
from t4a_jax.render.views import ring_views


def _bilinear_reference(plane: np.ndarray, u: float, v: float) -> np.ndarray:
    """grid_sample(align_corners=True, padding_mode='border') at one point, float64."""
    ru, rv = plane.shape[:2]
    pu = min(max((u + 1) / 2 * (ru - 1), 0.0), ru - 1)
    pv = min(max((v + 1) / 2 * (rv - 1), 0.0), rv - 1)
    out = np.zeros(plane.shape[2])
    for iu in range(ru):
        for iv in range(rv):
            weight = max(0.0, 1 - abs(pu - iu)) * max(0.0, 1 - abs(pv - iv))
            out += weight * plane[iu, iv].astype(np.float64)
    return out


def test_sample_plane_matches_bilinear_reference_with_border_clamp():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(5, 3, 4)).astype(np.float32)
    coords = np.concatenate([rng.uniform(-1, 1, size=(40, 2)),
                             [[-1, -1], [1, 1], [-1, 1], [1, -1], [0, 1], [1, 0.3]],
                             [[-1.7, 0.2], [2.5, -3.0], [0.1, 1.4]]])          # outside
    got = np.asarray(sample_plane(jnp.asarray(plane), jnp.asarray(coords[:, 0], jnp.float32),
                                  jnp.asarray(coords[:, 1], jnp.float32)))
    want = np.stack([_bilinear_reference(plane, u, v) for u, v in coords])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got[40], plane[0, 0], atol=1e-6)        # corners are nodes
    np.testing.assert_allclose(got[41], plane[-1, -1], atol=1e-6)


def test_hexplane_is_a_product_per_scale_concatenated_and_maps_time_onto_the_axis():
    rng = np.random.default_rng(1)
    points = jnp.asarray(rng.uniform(-0.5, 0.8, size=(30, 3)), jnp.float32)
    config = HexPlaneConfig(resolutions=((4, 5, 6, 3), (3, 3, 3, 2)), channels=2)
    field = init_hexplane(jax.random.key(0), points, config)
    for planes in field.planes:                               # time planes start at 1
        for (i, j), plane in zip(PLANE_AXES, planes):
            if j == 3:
                assert float(jnp.min(plane)) == float(jnp.max(plane)) == 1.0
            else:
                assert 0.1 <= float(jnp.min(plane)) and float(jnp.max(plane)) <= 0.5
    field = field.replace(planes=tuple(
        tuple(jnp.asarray(rng.normal(size=p.shape), jnp.float32) for p in planes)
        for planes in field.planes))
    lower, upper = np.asarray(field.lower), np.asarray(field.upper)
    extent = np.asarray(points).max(0) - np.asarray(points).min(0)
    np.testing.assert_allclose(lower, np.asarray(points).min(0) - 0.1 * extent, rtol=1e-5)
    for tau in (0.0, 0.37, 1.0):
        got = np.asarray(hexplane_features(field, points, tau))
        assert got.shape == (30, 4)
        xyz = 2 * (np.asarray(points, np.float64) - lower) / (upper - lower) - 1
        coords = np.concatenate([xyz, np.full((30, 1), 2 * tau - 1)], axis=1)
        want = []
        for planes in field.planes:
            product = np.ones((30, 2))
            for (i, j), plane in zip(PLANE_AXES, planes):
                product *= np.stack([_bilinear_reference(np.asarray(plane), c[i], c[j])
                                     for c in coords])
            want.append(product)
        np.testing.assert_allclose(got, np.concatenate(want, axis=1), rtol=1e-4, atol=1e-5)


def test_smoothness_terms_vanish_on_constant_planes_and_not_on_noise():
    points = jnp.asarray(np.random.default_rng(2).normal(size=(10, 3)), jnp.float32)
    field = init_hexplane(jax.random.key(1), points,
                          HexPlaneConfig(resolutions=((4, 4, 4, 5),), channels=3))
    assert float(time_smoothness(field)) == 0.0               # time planes are all ones
    constant = field.replace(planes=tuple(tuple(jnp.ones_like(p) for p in planes)
                                          for planes in field.planes))
    assert float(plane_total_variation(constant)) == 0.0
    assert float(plane_total_variation(field)) > 1e-3
    ramp = jnp.linspace(0.0, 1.0, 5)[None, :, None] * jnp.ones((4, 5, 3))
    linear = field.replace(planes=((*field.planes[0][:2], ramp, *field.planes[0][3:]),))
    assert float(time_smoothness(linear)) < 1e-12                # linear in time: smooth
    wiggle = ramp * jnp.asarray([1.0, -1.0, 1.0, -1.0, 1.0])[None, :, None]
    wiggly = field.replace(planes=((*field.planes[0][:2], wiggle, *field.planes[0][3:]),))
    assert float(time_smoothness(wiggly)) > 0.1


@pytest.fixture(scope="module")
def small_asset():
    g = builtin_object()
    keep = np.arange(0, g.num_gaussians, 8)
    return jax.tree.map(lambda x: x[keep], g)


def test_new_field_renders_the_static_asset_bit_for_bit(small_asset):
    config = MotionConfig(hexplane=HexPlaneConfig(resolutions=((8, 8, 8, 4),), channels=4),
                          width=16, sh_terms=3)
    field = init_motion_field(jax.random.key(0), small_asset, config)
    for tau in (0.0, 0.5, 1.0):
        posed = jax.jit(deform)(field, small_asset, tau)
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            np.testing.assert_array_equal(np.asarray(getattr(posed, name)),
                                          np.asarray(getattr(small_asset, name)), name)
    views = ring_views(2, elevation=15.0, size=32)
    taus = jnp.array([0.0, 1.0])
    viewmats = jnp.broadcast_to(jnp.asarray(views.viewmats), (2, 2, 4, 4))
    ks = jnp.broadcast_to(jnp.asarray(views.Ks), (2, 2, 3, 3))
    colors, alphas, overflow = jax.jit(render_frames, static_argnums=(5, 6))(
        field, small_asset, taus, viewmats, ks, 32, 32)
    assert colors.shape == (2, 2, 32, 32, 3) and int(overflow.max()) == 0
    np.testing.assert_array_equal(np.asarray(colors[0]), np.asarray(colors[1]))

    @jax.jit
    def static_frames(viewmats, ks):      # the static asset, rendered frame by frame
        return jax.vmap(lambda v, k: rasterize(
            **small_asset.activated(), viewmats=v, Ks=k, width=32, height=32,
            sh_degree=small_asset.sh_degree, backgrounds=jnp.zeros((2, 3)))[0])(viewmats, ks)

    # The posed Gaussians are the canonical arrays bit for bit (above); two compiled
    # programs may still round the same render differently in the last bits.
    np.testing.assert_allclose(np.asarray(colors), np.asarray(static_frames(viewmats, ks)),
                               atol=2e-6, rtol=0)


def test_sh4d_with_one_term_is_static_and_more_terms_fit_a_changing_colour():
    rng = np.random.default_rng(3)
    sh = jnp.asarray(rng.normal(size=(6, 4, 3)), jnp.float32)
    one = init_sh4d(sh, 1)
    for tau in (0.0, 0.3, 1.0):
        np.testing.assert_array_equal(np.asarray(sh_at(one, tau)), np.asarray(sh))
        np.testing.assert_array_equal(np.asarray(sh_at(init_sh4d(sh, 4), tau)),
                                      np.asarray(sh))
    taus = jnp.linspace(0.0, 1.0, 9)
    target = 0.3 * jnp.cos(jnp.pi * taus) + 0.2 * jnp.cos(2 * jnp.pi * taus)   # [T]

    def fitted_error(terms: int) -> float:
        coefficients = init_sh4d(jnp.zeros((1, 1, 1)), terms)

        def loss(c):
            values = jax.vmap(lambda t: sh_at(c, t)[0, 0, 0])(taus)
            return jnp.mean(jnp.square(values - target))

        optimizer = optax.adam(0.05)
        state = optimizer.init(coefficients)

        @jax.jit
        def step(c, s):
            grads = jax.grad(loss)(c)
            updates, s = optimizer.update(grads, s)
            return optax.apply_updates(c, updates), s

        for _ in range(400):
            coefficients, state = step(coefficients, state)
        return float(loss(coefficients))

    assert fitted_error(3) < 1e-5
    assert fitted_error(1) > 0.02                      # a constant cannot follow it


def test_kabsch_matches_scipy_and_fixes_reflections():
    rng = np.random.default_rng(4)
    rotations = Rotation.random(5, random_state=5).as_matrix()
    p = rng.normal(size=(5, 6, 3))
    q = np.einsum("bij,bmj->bmi", rotations, p) + 0.01 * rng.normal(size=(5, 6, 3))
    got = np.asarray(kabsch(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)))
    for b in range(5):
        want, _ = Rotation.align_vectors(q[b], p[b])       # R with q ~ R p
        np.testing.assert_allclose(got[b], want.as_matrix(), atol=1e-4)
    mirrored = p[0] * np.array([1.0, 1.0, -1.0])            # a reflection of p
    r = np.asarray(kabsch(jnp.asarray(p[0], jnp.float32), jnp.asarray(mirrored, jnp.float32)))
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)


def test_nearest_neighbours_are_exact_and_exclude_the_point_itself():
    points = np.random.default_rng(6).normal(size=(70, 3)).astype(np.float32)
    got = np.asarray(nearest_neighbours(jnp.asarray(points), k=3, block=16))
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    want = np.argsort(d, axis=1)[:, :3]
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))


def test_arap_is_zero_for_rigid_motions_and_positive_for_a_stretch():
    rng = np.random.default_rng(7)
    points = jnp.asarray(rng.normal(size=(200, 3)), jnp.float32)
    neighbours = nearest_neighbours(points, k=3)
    anchors = jnp.asarray(rng.choice(200, 64, replace=False))
    for seed in range(3):
        rotation = jnp.asarray(Rotation.random(random_state=seed).as_matrix(), jnp.float32)
        moved = points @ rotation.T + jnp.asarray(rng.normal(size=3), jnp.float32)
        assert float(arap_loss(points, moved, neighbours, anchors)) < 1e-8
    stretched = points * jnp.array([1.5, 1.0, 1.0])
    assert float(arap_loss(points, stretched, neighbours, anchors)) > 1e-3
    grads = jax.grad(lambda y: arap_loss(points, y, neighbours, anchors))(stretched)
    assert np.isfinite(np.asarray(grads)).all() and float(jnp.abs(grads).max()) > 0


def test_gradients_through_deform_and_render_are_finite(small_asset):
    config = MotionConfig(hexplane=HexPlaneConfig(resolutions=((6, 6, 6, 4),), channels=4),
                          width=16, sh_terms=2)
    field = init_motion_field(jax.random.key(1), small_asset, config)
    # Move the heads off zero so every parameter is on the gradient's path.
    field = field.replace(decoder=jax.tree.map(lambda x: x + 0.01, field.decoder))
    views = ring_views(2, elevation=15.0, size=16)
    viewmats = jnp.asarray(views.viewmats)[None]
    ks = jnp.asarray(views.Ks)[None]
    target = jnp.full((1, 2, 16, 16, 3), 0.5)

    def loss(f):
        colors, _, _ = render_frames(f, small_asset, jnp.array([0.5]), viewmats, ks, 16, 16)
        return jnp.mean(jnp.square(colors - target))

    grads = jax.jit(jax.grad(loss))(field)
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert float(jnp.abs(grads.decoder["heads"]["position"][1][0]).max()) > 0
    assert any(float(jnp.abs(p).max()) > 0 for p in grads.hexplane.planes[0])


def test_reconstruction_loss_is_the_weighted_sum_of_colour_and_mask_errors():
    rng = np.random.default_rng(8)
    colors, frames = rng.uniform(size=(2, 3, 4, 5, 6, 3))
    alphas = rng.uniform(size=(3, 4, 5, 6, 1))
    masks = rng.uniform(size=(3, 4, 5, 6)) > 0.5
    loss, parts = reconstruction_loss(jnp.asarray(colors), jnp.asarray(alphas),
                                      jnp.asarray(frames), jnp.asarray(masks),
                                      color_weight=100.0, mask_weight=10.0)
    color = np.mean((colors - frames) ** 2)
    mask = np.mean((alphas[..., 0] - masks) ** 2)
    np.testing.assert_allclose([parts["color"], parts["mask"]], [color, mask], rtol=1e-6)
    np.testing.assert_allclose(float(loss), 100 * color + 10 * mask, rtol=1e-6)
    zero, _ = reconstruction_loss(jnp.asarray(frames), jnp.asarray(masks[..., None], float),
                                  jnp.asarray(frames), jnp.asarray(masks))
    assert float(zero) == 0.0


def test_frames_are_added_progressively():
    counts = [int(frames_in_play(s, 16, every=50)) for s in (0, 49, 50, 120, 749, 5000)]
    assert counts == [1, 1, 2, 3, 15, 16]
    early = np.asarray(draw_frames(jax.random.key(0), 120, 16, 64))
    assert early.shape == (64,) and set(early) == {0, 1, 2}
    late = np.asarray(draw_frames(jax.random.key(1), 800, 16, 16))
    assert sorted(late) == list(range(16))                     # all frames, each once
    assert np.asarray(draw_frames(jax.random.key(1), 0, 16, 16)).max() == 0


def test_optimizer_groups_have_their_own_rates_and_the_box_is_frozen(small_asset):
    config = MotionConfig(hexplane=HexPlaneConfig(resolutions=((4, 4, 4, 3),), channels=2),
                          width=8, sh_terms=2)
    field = init_motion_field(jax.random.key(2), small_asset, config)
    tx = make_optimizer(OptimizerConfig(planes_lr=0.01, heads_lr=1e-4, sh4d_lr=1e-3))
    ones = jax.tree.map(jnp.ones_like, field)
    updates, _ = tx.update(ones, tx.init(field), field)
    moved = optax.apply_updates(field, updates)
    step = lambda a, b: float(jnp.max(jnp.abs(a - b)))
    assert step(moved.hexplane.lower, field.hexplane.lower) == 0.0
    assert step(moved.hexplane.upper, field.hexplane.upper) == 0.0
    assert step(moved.hexplane.planes[0][0], field.hexplane.planes[0][0]) == pytest.approx(
        0.01, rel=1e-3)                               # Adam's first step is lr * sign
    assert step(moved.decoder["trunk"][0][0], field.decoder["trunk"][0][0]) == pytest.approx(
        1e-4, rel=1e-3)
    assert step(moved.sh4d, field.sh4d) == pytest.approx(1e-3, rel=1e-3)
