"""Turntable video of a static Gaussian asset (`python -m t4a_jax.turntable`).

    python -m t4a_jax.turntable --config=configs/turntable.py \
        --config.asset=model.ply --config.out=out/turntable.mp4

Cameras follow the Animate3D condition renders: an orbit around the origin (+z up) at
elevation 15 degrees, distance 3.0, fovy 40 degrees, grey background 0.498; `frames`
azimuths evenly spaced over 360 degrees from `azimuth_start`. The SH degree is the
asset's. Variant `configs/turntable.py:tiny`: 64x64, 8 frames, tile capacity 2048
(tests and CI).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # '' = the built-in object; else a 3DGS .ply or a mesh (.obj, .glb, .gltf, .ply
    # with faces).
    config.asset = ""
    config.mesh_samples = 20000   # Gaussians sampled on a mesh's triangles (plus vertices)
    config.seed = 0               # built-in object and mesh sampling
    config.out = "out/turntable.mp4"  # .mp4 or .gif
    config.frames = 48
    config.fps = 24
    config.size = 256             # square frames, pixels
    config.elevation = 15.0       # degrees
    config.azimuth_start = 0.0    # degrees
    config.distance = 3.0
    config.fovy = 40.0            # degrees
    config.background = (0.498, 0.498, 0.498)
    config.cameras_per_step = 8   # cameras rendered by one call of the jitted renderer
    config.tile_capacity = 1024   # Gaussians per 16x16 tile to start with (render.rasterize)
    config.overflow = "grow"      # a tile overflow: 'grow' the capacity, or 'raise'

    if arg == "tiny":
        config.size = 64
        config.frames = 8
        # At 64x64 a 16-pixel tile holds about half of the built-in object's Gaussians.
        config.tile_capacity = 2048
    elif arg:
        raise ValueError(f"configs/turntable.py: unknown variant {arg!r} (known: 'tiny')")
    return config
