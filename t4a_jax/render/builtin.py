"""A built-in procedural Gaussian asset, so that rendering needs no file.

`builtin_object(seed)` is a toy creature, +z up, facing +x, inside the unit sphere: a
striped ellipsoidal body, a head with ears, eyes and a nose, four differently coloured
legs and a curled tail, 3,770 isotropic Gaussians on the surfaces of these
primitives. Its colours differ front to back and left to right, so a turntable shows the
rotation.
"""

from __future__ import annotations

import numpy as np

from t4a_jax.render import primitives
from t4a_jax.render.gaussians import Gaussians

_OPACITY = 0.95
_SIZE = 0.6          # Gaussian standard deviation / mean spacing of the points
_RADIUS = 0.95       # every mean plus 3 standard deviations lies within this radius


def _ellipsoid(rng: np.random.Generator, n: int, centre, radii) -> np.ndarray:
    """[n, 3] points on an axis-aligned ellipsoid surface (uniform directions)."""
    return primitives.ellipsoid(primitives.random_directions(rng, n), centre, radii).points


def _tube(rng: np.random.Generator, n: int, curve: np.ndarray,
          radius: float) -> tuple[np.ndarray, np.ndarray]:
    """[n, 3] points drawn uniformly on a tube of `radius` around the polyline `curve`
    [K, 3] (no tangent here is parallel to +y), and each point's arc-length fraction."""
    s = rng.random(n)
    angle = rng.random(n) * 2.0 * np.pi
    surface = primitives.tube(curve, radius, s, angle, reference=(0.0, 1.0, 0.0))
    return surface.points, s


def builtin_object(seed: int = 0) -> Gaussians:
    """The toy creature of the module docstring; the same `seed` gives the same Gaussians.

    Returns Gaussians with float32 means [N, 3], identity quats [N, 4], isotropic
    log_scales [N, 3], opacity 0.95 and SH degree 0 colours [N, 1, 3].
    """
    rng = np.random.default_rng(seed)
    parts = []  # (points [n, 3], rgb [n, 3], surface area per point)

    def add(points: np.ndarray, rgb: np.ndarray, area: float) -> None:
        parts.append((points, np.broadcast_to(rgb, points.shape), area / len(points)))

    body_radii = (0.42, 0.24, 0.22)
    body = _ellipsoid(rng, 1500, (0.0, 0.0, 0.05), body_radii)
    stripe = (np.sin(body[:, 0] * 30.0) > 0.3)[:, None]
    belly = (body[:, 2] < -0.05)[:, None]
    body_rgb = np.where(stripe, [0.25, 0.12, 0.05], [0.95, 0.55, 0.1])
    add(body, np.where(belly, [0.98, 0.9, 0.75], body_rgb),
        primitives.ellipsoid_area(body_radii))
    # A blue saddle spot on the left (+y) flank only.
    spot_centre = np.array([-0.05, 0.24, 0.12])
    spot = _ellipsoid(rng, 60, spot_centre, (0.08, 0.02, 0.06))
    add(spot, [0.15, 0.35, 0.95], primitives.ellipsoid_area((0.08, 0.02, 0.06)))

    head_centre = np.array([0.5, 0.0, 0.3])
    head = _ellipsoid(rng, 700, head_centre, (0.17, 0.16, 0.15))
    add(head, [1.0, 0.85, 0.3], primitives.ellipsoid_area((0.17, 0.16, 0.15)))
    for side in (1.0, -1.0):
        ear = _ellipsoid(rng, 80, head_centre + [-0.03, 0.09 * side, 0.16], (0.04, 0.05, 0.08))
        add(ear, [0.8, 0.3, 0.35], primitives.ellipsoid_area((0.04, 0.05, 0.08)))
        eye = _ellipsoid(rng, 40, head_centre + [0.14, 0.07 * side, 0.05], (0.03,) * 3)
        add(eye, [0.05, 0.05, 0.08], primitives.ellipsoid_area((0.03,) * 3))
    nose = _ellipsoid(rng, 40, head_centre + [0.17, 0.0, -0.01], (0.035,) * 3)
    add(nose, [0.9, 0.2, 0.4], primitives.ellipsoid_area((0.035,) * 3))

    leg_rgb = {(1, 1): [0.9, 0.15, 0.15], (1, -1): [0.15, 0.75, 0.2],
               (-1, 1): [0.2, 0.3, 0.9], (-1, -1): [0.75, 0.2, 0.8]}
    for (front, side), rgb in leg_rgb.items():
        top = np.array([0.22 * front, 0.12 * side, -0.05])
        leg_curve = np.stack([top, top + [0.0, 0.0, -0.45]])
        leg, _ = _tube(rng, 220, leg_curve, 0.06)
        add(leg, rgb, primitives.tube_area(leg_curve, 0.06))

    t = np.linspace(0.0, 1.0, 12)[:, None]
    tail_curve = np.concatenate([-0.38 - 0.3 * np.sin(t * 1.6),
                                 0.1 * np.sin(t * 3.0),
                                 0.1 + 0.45 * t ** 1.5], axis=1)
    tail, s = _tube(rng, 350, tail_curve, 0.04)
    tail_rgb = (1.0 - s[:, None]) * [0.95, 0.55, 0.1] + s[:, None] * [0.55, 0.1, 0.75]
    add(tail, tail_rgb, primitives.tube_area(tail_curve, 0.04))

    means = np.concatenate([p for p, _, _ in parts])
    rgb = np.concatenate([c for _, c, _ in parts])
    scales = np.concatenate([np.full(len(p), _SIZE * np.sqrt(a)) for p, _, a in parts])
    # Shrink about the origin so that every mean + 3 sigma is inside _RADIUS.
    extent = np.max(np.linalg.norm(means, axis=1) + 3.0 * scales)
    shrink = min(1.0, _RADIUS / extent)
    return primitives.isotropic_gaussians(means * shrink, scales * shrink, rgb, _OPACITY)
