"""The CLIP 4D metrics and Animate3D's test rig (`t4a_jax.evaluation.clip_scores`):
scores against loops that restate the definitions, the rig's geometry from its
matrices, and renders of an unmoved asset."""

from __future__ import annotations

import numpy as np
import pytest

from t4a_jax.evaluation.clip_scores import (FRONT_VIEW, clip_4d_scores, rig_renders,
                                            rig_views)
from t4a_jax.render.builtin import builtin_object


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_scores_restated_by_loops():
    rng = np.random.default_rng(0)
    views, frames, dim = 12, 5, 8
    e = rng.normal(size=(views, frames, dim)) * rng.uniform(0.5, 3, (views, frames, 1))
    r, p = rng.normal(size=(views, dim)), rng.normal(size=dim) * 4
    scores = clip_4d_scores(e, r, p)
    o_img = np.mean([_cos(e[v, t], r[v]) for v in range(views) for t in range(frames)])
    o_text = np.mean([_cos(e[v, t], p) for v in range(views) for t in range(frames)])
    f_img = np.mean([_cos(e[FRONT_VIEW, t], r[FRONT_VIEW]) for t in range(frames)])
    f_text = np.mean([_cos(e[FRONT_VIEW, t], p) for t in range(frames)])
    c = np.mean([_cos(e[v, t - 1], e[v, t]) for v in range(views) for t in range(1, frames)])
    expected = dict(clip_o_img=o_img, clip_o_text=o_text, clip_f_img=f_img,
                    clip_f_text=f_text, clip_c=c)
    assert scores == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="do not match"):
        clip_4d_scores(e, r[:3], p)
    with pytest.raises(ValueError, match=">= 2 frames"):
        clip_4d_scores(e[:, :1], r, p)


def test_rig_is_animate3ds_three_rings_of_four():
    views = rig_views(64)
    centres = views.c2w[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 3.0, atol=1e-5)
    elevations = np.degrees(np.arcsin(centres[:, 2] / 3.0))
    np.testing.assert_allclose(elevations, [15] * 4 + [0] * 4 + [30] * 4, atol=1e-4)
    azimuths = np.degrees(np.arctan2(centres[:, 1], centres[:, 0])) % 360
    for ring in range(3):
        steps = np.diff(azimuths[4 * ring:4 * ring + 4]) % 360
        np.testing.assert_allclose(steps, 90.0, atol=1e-4)
    assert abs(elevations[FRONT_VIEW]) < 1e-4
    np.testing.assert_allclose(azimuths[FRONT_VIEW], azimuths[0], atol=1e-4)   # azimuth 0
    fovy = np.degrees(2 * np.arctan(32 / views.Ks[:, 1, 1]))
    np.testing.assert_allclose(fovy, 40.0, atol=1e-4)


def test_an_unmoved_asset_renders_its_reference_every_frame():
    static = builtin_object()
    frames, reference = rig_renders([static] * 3, static, rig_views(24))
    assert frames.shape == (12, 3, 24, 24, 3) and frames.dtype == np.uint8
    for t in range(3):
        np.testing.assert_array_equal(frames[:, t], reference)
    assert (reference < 250).any(axis=-1).mean(axis=(1, 2)).min() > 0.05    # object on white
