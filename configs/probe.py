"""The tracking probe (`python -m t4a_jax.evaluation.probe`, paper Fig. 3).

Default: the demo, a one-object synthetic set generated into `out/data` and a random
tiny MV-VDM (it runs anywhere in a minute; random features track poorly). For the real
question, point `data` at an MV-Video folder (or a synthetic set), `tracks` at its track
cache, and `models` at converted checkpoints (see t4a_jax/evaluation/probe.py).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = ""              # MV-Video root; '' = generate a synthetic demo set
    config.tracks = "tracks"      # track cache under data (or absolute); demo: exact_tracks
    config.models = ""            # converted checkpoints (unet/, vae/, ...); '' = random tiny
    config.item = 0               # which (uid, anim) of the index
    config.size = 64              # probed resolution (256 for the real model)
    config.frames = 8             # frames of the clip (16 in training)
    config.stride = 3             # frame stride (as in training)
    config.timestep = 50          # "slight noise": DDPM timestep of 1000
    config.tap = "up_blocks.1.motion_modules.2"   # the block Track4Animate3D supervises
    config.seed = 0
    config.out = "out/probe"
    if arg == "full":
        config.size = 256
        config.frames = 16
    elif arg not in (None, ""):
        raise ValueError(f"configs/probe.py: unknown variant {arg!r} (known: 'full')")
    return config
