"""Tests for `t4a_jax.render.primitives`: samples lie on their surfaces with outward
unit normals, and the areas add up."""

from __future__ import annotations

import numpy as np
import pytest

from t4a_jax.render import primitives


def _thomsen_area(radii) -> float:
    """Knud Thomsen's closed-form approximation (error < 1.1 %)."""
    a, b, c = radii
    p = 1.6075
    return 4.0 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3.0) ** (1.0 / p)


@pytest.mark.parametrize("random", [False, True])
def test_ellipsoid_samples_lie_on_it_with_outward_normals(random):
    centre, radii = np.array([0.1, -0.2, 0.3]), np.array([0.4, 0.25, 0.1])
    n = 2000
    directions = (primitives.random_directions(np.random.default_rng(0), n) if random
                  else primitives.fibonacci_sphere(n))
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-12)
    s = primitives.ellipsoid(directions, centre, radii)
    local = s.points - centre
    np.testing.assert_allclose(np.sum((local / radii) ** 2, axis=1), 1.0, atol=1e-12)
    gradient = local / radii ** 2
    np.testing.assert_allclose(s.normals, gradient / np.linalg.norm(gradient, axis=1,
                                                                    keepdims=True), atol=1e-12)
    np.testing.assert_array_equal(s.coordinate, directions)
    area = primitives.ellipsoid_area(radii)
    np.testing.assert_allclose(s.area.sum(), area, rtol=1e-3 if not random else 0.05)


def test_ellipsoid_area():
    assert primitives.ellipsoid_area((0.3, 0.3, 0.3)) == pytest.approx(4 * np.pi * 0.09,
                                                                       rel=1e-9)
    for radii in [(0.42, 0.24, 0.22), (0.08, 0.02, 0.06), (1.0, 0.5, 0.1)]:
        assert primitives.ellipsoid_area(radii) == pytest.approx(_thomsen_area(radii),
                                                                 rel=0.011)


def test_tube_samples_lie_on_it_and_rings_cover_it():
    curve = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -0.3], [0.2, 0.0, -0.5]])
    radius = 0.05
    s, angle, around = primitives.tube_rings(300, curve, radius)
    assert len(s) % around == 0 and abs(len(s) - 300) <= around and around >= 6
    surface = primitives.tube(curve, radius, s, angle)
    np.testing.assert_array_equal(surface.coordinate[:, 0], s)
    np.testing.assert_allclose(np.linalg.norm(surface.normals, axis=1), 1.0, atol=1e-12)
    # Every point is `radius` from the curve, along its normal, which is perpendicular
    # to the segment it sits on.
    length = 0.3 + 0.2 * np.sqrt(2)
    axis_point = surface.points - radius * surface.normals
    first = s < 0.3 / length                                        # the vertical segment
    np.testing.assert_allclose(axis_point[first][:, :2], 0.0, atol=1e-12)
    np.testing.assert_allclose(surface.normals[first][:, 2], 0.0, atol=1e-12)
    tangent = np.array([1.0, 0.0, -1.0]) / np.sqrt(2)
    np.testing.assert_allclose(surface.normals[~first] @ tangent, 0.0, atol=1e-12)
    assert primitives.tube_area(curve, radius) == pytest.approx(2 * np.pi * radius * length)
    np.testing.assert_allclose(surface.area.sum(), primitives.tube_area(curve, radius))
    # Given a reference direction, angle 0 points along tangent x reference.
    down = primitives.tube(curve[:2], radius, np.array([0.5]), np.array([0.0]),
                           reference=(0.0, 1.0, 0.0))
    np.testing.assert_allclose(down.normals, [[1.0, 0.0, 0.0]], atol=1e-12)


def test_isotropic_gaussians():
    means = np.zeros((5, 3))
    sigma = np.linspace(0.01, 0.05, 5)
    g = primitives.isotropic_gaussians(means, sigma, np.full((5, 3), 0.25), 0.9)
    assert g.num_gaussians == 5 and g.sh_degree == 0
    np.testing.assert_allclose(np.asarray(g.scales), np.repeat(sigma[:, None], 3, 1),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g.opacities), 0.9, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(g.quats), np.tile([1.0, 0, 0, 0], (5, 1)))
