"""Asset preparation (`python -m tools.prepare_assets --meshes DIR --out OUT`): meshes
normalised, lit by four lights and baked into vertex colours in Blender, then 3D
Gaussians (the paper's Sketchfab28 processing, Appendix D).

The appendix names the setup (a key, a fill, a back and a background light; direct and
indirect light with diffuse, glossy, transmission and emission) but gives no numbers;
the defaults below are ours. Lights are placed on the project's camera orbit convention
(`render.cameras.orbit_position`: azimuth 0 is the first Animate3D view, +z up) at
`distance` from the normalised object (radius `radius`), aimed at its centre; power in
watts (Blender's units), colours linear RGB. The background light is the world colour,
which lights the object evenly from every side. Override any value with
`--set lights.key.power=300`.
"""

from __future__ import annotations

import ml_collections


def _light(kind: str, elevation: float, azimuth: float, power: float,
           color: tuple[float, float, float], size: float, distance: float = 4.0) -> dict:
    return dict(type=kind, elevation=elevation, azimuth=azimuth, distance=distance,
                power=power, color=color, size=size)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, ""):
        raise ValueError(f"configs/prepare_assets.py: unknown variant {arg!r}")
    config = ml_collections.ConfigDict()
    config.radius = 0.8                  # the normalised object's farthest vertex (as animate)
    config.samples = 64                  # Cycles samples per vertex bake
    config.timeout = 900                 # seconds one Blender bake may take
    config.mesh_samples = 20000          # Gaussians on the triangles (plus one per vertex)
    config.seed = 0
    config.lights = ml_collections.ConfigDict(dict(
        # the primary light, high at the front-left: it shapes the object
        key=_light("AREA", 35.0, -40.0, 100.0, (1.0, 0.95, 0.88), 1.5),
        # lower and weaker at the front-right: it softens the key's shadows
        fill=_light("AREA", 15.0, 50.0, 35.0, (0.88, 0.93, 1.0), 2.5),
        # high behind: a rim that separates the object from the background
        back=_light("AREA", 50.0, 180.0, 60.0, (1.0, 1.0, 1.0), 1.5),
    ))
    config.background = ml_collections.ConfigDict(dict(color=(1.0, 1.0, 1.0), strength=0.15))
    config.preview = ml_collections.ConfigDict(dict(frames=24, size=256, elevation=15.0,
                                                    fps=12.0))
    config.contact_size = 192            # one asset's cell in contact_sheet.png (px)
    return config
