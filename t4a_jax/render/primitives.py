"""Surface primitives that procedural Gaussian assets are built from: ellipsoids and
tubes, sampled as points with outward normals, and isotropic Gaussians on them.

Shapes: n samples give a `Surface` with points and unit normals [n, 3], the surface
area each sample stands for [n], and a per-sample coordinate [n, 3] that textures read:
an ellipsoid's unit-sphere direction u (the point is `centre + u * radii`), a tube's
(s, cos, sin) with s in [0, 1] the arc-length fraction along its curve and the angle
around it. Everything is float64 NumPy; lengths are in world units.

Where the samples go is the caller's choice: `fibonacci_sphere` (deterministic, even)
or `random_directions` for ellipsoids; `tube_rings` (staggered rings, even) or any
(s, angle) pairs for tubes. `render.builtin` and `data.procedural` build their
creatures from these.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from t4a_jax.render.gaussians import Gaussians, logit, sh_from_rgb

_AREA_SAMPLES = 4096     # Fibonacci directions that `ellipsoid_area` averages over


class Surface(NamedTuple):
    """n samples of a primitive (see the module docstring): points, normals [n, 3],
    area [n] (summing to about the surface's area), coordinate [n, 3]."""

    points: np.ndarray
    normals: np.ndarray
    area: np.ndarray
    coordinate: np.ndarray


def fibonacci_sphere(n: int) -> np.ndarray:
    """[n, 3] near-uniform unit vectors (the Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (1.0 + np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def random_directions(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 3] unit vectors drawn uniformly on the sphere (normalised normal draws)."""
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _ellipsoid_stretch(u: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Area of the ellipsoid patch over a unit-sphere patch at directions u [n, 3]."""
    return np.prod(radii) * np.linalg.norm(u / radii, axis=-1)


def ellipsoid(directions: np.ndarray, centre: ArrayLike, radii: ArrayLike) -> Surface:
    """Samples at unit `directions` [n, 3] (uniform on the sphere) of the axis-aligned
    ellipsoid `centre + u * radii`; each stands for 4 pi / n of the sphere, stretched
    to the ellipsoid."""
    radii = np.asarray(radii, np.float64)
    normals = directions / radii
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    area = 4.0 * np.pi / len(directions) * _ellipsoid_stretch(directions, radii)
    return Surface(np.asarray(centre) + directions * radii, normals, area, directions)


def ellipsoid_area(radii: ArrayLike) -> float:
    """The surface area of an ellipsoid with semi-axes `radii` (3,), numerically (the
    mean stretch over 4096 Fibonacci directions; relative error about 1e-6)."""
    return float(4.0 * np.pi * _ellipsoid_stretch(fibonacci_sphere(_AREA_SAMPLES),
                                                  np.asarray(radii)).mean())


def tube(curve: np.ndarray, radius: float, s: np.ndarray, angle: np.ndarray,
         reference: ArrayLike | None = None) -> Surface:
    """Samples of the tube of `radius` around the polyline `curve` [K, 3] at arc-length
    fractions `s` [n] in [0, 1] and angles `angle` [n] (radians) around it.

    The angle is measured in the frame u = tangent x `reference` (normalised),
    v = tangent x u; `reference` must not be parallel to any tangent, and is by default
    the coordinate axis least aligned with the mean tangent of the samples.
    """
    lengths = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    arc = s * cumulative[-1]
    segment = np.minimum(np.searchsorted(cumulative, arc, side="right") - 1, len(lengths) - 1)
    f = ((arc - cumulative[segment]) / lengths[segment])[:, None]
    centre = curve[segment] * (1.0 - f) + curve[segment + 1] * f
    tangent = (curve[segment + 1] - curve[segment]) / lengths[segment, None]
    if reference is None:
        reference = np.eye(3)[np.argmin(np.abs(tangent.mean(axis=0)))]
    u = np.cross(tangent, reference)
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    v = np.cross(tangent, u)
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    points = centre + radius * cos * u + radius * sin * v
    area = np.full(len(s), tube_area(curve, radius) / len(s))
    return Surface(points, cos * u + sin * v, area,
                   np.stack([s, cos[:, 0], sin[:, 0]], axis=-1))


def tube_area(curve: np.ndarray, radius: float) -> float:
    """The lateral area 2 pi radius L of a tube around the polyline `curve` [K, 3] of
    length L (the ends are open)."""
    return float(2.0 * np.pi * radius * np.linalg.norm(np.diff(curve, axis=0), axis=1).sum())


def tube_rings(n: int, curve: np.ndarray, radius: float
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """About n tube samples in staggered rings, evenly spaced along and around the tube
    (whole rings, so the count is rounded; at least 2 rings of 6): (s [m], angle [m],
    samples per ring), ring-major, for `tube`."""
    length = np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))[-1]
    spacing = np.sqrt(2.0 * np.pi * radius * length / n)
    around = max(6, int(round(2.0 * np.pi * radius / spacing)))
    along = max(2, int(round(n / around)))
    s = (np.arange(along) + 0.5) / along
    angle = 2.0 * np.pi * (np.arange(around)[None, :]
                           + 0.5 * (np.arange(along) % 2)[:, None]) / around
    return np.repeat(s, around), angle.reshape(-1), around


def isotropic_gaussians(means: np.ndarray, sigma: np.ndarray, rgb: np.ndarray,
                        opacity: float) -> Gaussians:
    """Gaussians at `means` [N, 3] with standard deviations `sigma` [N] on every axis,
    identity rotations, one `opacity` and SH degree 0 colours `rgb` [N, 3] (float32)."""
    n = len(means)
    return Gaussians(
        means=jnp.asarray(means, jnp.float32),
        quats=jnp.asarray(np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)), jnp.float32),
        log_scales=jnp.asarray(np.repeat(np.log(sigma)[:, None], 3, axis=1), jnp.float32),
        opacity_logits=logit(jnp.full((n,), opacity, jnp.float32)),
        sh=sh_from_rgb(jnp.asarray(rgb, jnp.float32)))
