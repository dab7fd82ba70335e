"""A synthetic MV-Video set with exact tracks (`python -m t4a_jax.data.synthetic`).

    python -m t4a_jax.data.synthetic --config=configs/synthetic.py --config.out=DIR \
        --config.objects=4

Procedural animated creatures rendered on the Animate3D orbit (distance 3.0, fovy 40
degrees, grey background 0.498; see t4a_jax/data/synthetic.py for the layout). `out` has
no default. A rerun completes the set, skipping complete items unless `overwrite`; the
set remembers views, frames, size, seed and num_gaussians and refuses other values.
Variant `configs/synthetic.py:tiny`: 1 object, 4 views of 6 frames at 128 px, 1024
Gaussians (a few seconds; tests and demos).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.out = ""               # dataset directory (required)
    config.objects = 4            # creatures: uids synth_0000, synth_0001, ...
    config.animations = 1         # animations per creature: anim_0, anim_1, ...
    config.views = 16             # evenly spaced in azimuth
    config.frames = 48            # per video, at 24 fps (frame 0 is the rest pose)
    config.size = 256             # video height and width, pixels (>= 16)
    config.seed = 0               # decides every creature, motion and camera ring
    config.num_gaussians = 4096   # per creature (>= 1024)
    config.overwrite = False      # regenerate items that are already complete

    if arg == "tiny":
        config.update(dict(objects=1, views=4, frames=6, size=128, num_gaussians=1024))
    elif arg:
        raise ValueError(f"configs/synthetic.py: unknown variant {arg!r} (known: 'tiny')")
    return config
