"""Random Gaussian scenes and cameras shared by the rendering tests."""

from __future__ import annotations

import numpy as np
import trimesh

from t4a_jax.render import orbit_cameras


def random_scene(seed: int, n: int = 150, *, sh_degree: int | None = None,
                 spread: float = 1.0, dtype=np.float32) -> dict[str, np.ndarray]:
    """Anisotropic, rotated Gaussians around the origin, some far out (behind cameras,
    off-screen). Colours are RGB [N,3] or SH [N,(d+1)^2,3]."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n, 3)) * 0.6 * spread
    far_out = rng.random(n) < 0.1
    means[far_out] *= 6.0                     # beyond the orbit radius: behind / outside
    quats = rng.normal(size=(n, 4))
    scales = np.exp(rng.normal(size=(n, 3)) * 0.5 - 2.6)
    opacities = rng.uniform(0.05, 1.0, size=n)
    if sh_degree is None:
        colors = rng.uniform(size=(n, 3))
    else:
        colors = rng.normal(size=(n, (sh_degree + 1) ** 2, 3)) * 0.4
        colors[:, 0] += 0.8
    scene = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    return {k: v.astype(dtype) for k, v in scene.items()}


def random_cameras(seed: int, count: int, width: int, height: int, *, distance: float = 3.0,
                   fovy_degrees: float = 45.0) -> tuple[np.ndarray, np.ndarray]:
    """`count` orbit cameras at random elevation/azimuth: (viewmats [C,4,4], Ks [C,3,3])."""
    rng = np.random.default_rng(seed + 1000)
    elevation = rng.uniform(-40.0, 60.0, size=count)
    azimuth = rng.uniform(0.0, 360.0, size=count)
    viewmats, ks, _ = orbit_cameras(elevation, azimuth, distance=distance,
                                    fovy_degrees=fovy_degrees, width=width, height=height)
    ks = np.array(ks)
    ks[:, 0, 2] += rng.uniform(-3.0, 3.0, size=count)   # off-centre principal points
    ks[:, 1, 1] *= rng.uniform(0.9, 1.1, size=count)    # non-square pixels
    return np.asarray(viewmats), ks


def icosphere() -> trimesh.Trimesh:
    """A small icosphere mesh (radius 0.8), red on +x and blue elsewhere."""
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.8)
    mesh.visual.vertex_colors = np.where(mesh.vertices[:, :1] > 0, (255, 0, 0, 255),
                                         (0, 0, 255, 255))
    return mesh
