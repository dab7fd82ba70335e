"""Stage One sampling (`python -m t4a_jax.sample --config=configs/sample.py`): a static
object + a prompt -> a multi-view video.

    python -m t4a_jax.sample --config=configs/sample.py \
        --config.checkpoint=out/stage1_tiny/models --config.prompt="a creature walks"

`checkpoint` (required) is a model directory (`t4a_jax.models.load_bundle`: the output
of `python -m tools.convert_weights` or the training program's `WORKDIR/models`).
`views`, `frames`, `size`, `steps` and `guidance` left unset come from the bundle's
`sampling.json` (the settings it was trained with, written by `t4a_jax.train`), and
for a bundle without one (converted weights) from `defaults`, the paper's inference
setup: 4 views x 16 frames at 256 px, DDIM 25 steps, guidance 7.5.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, ""):
        raise ValueError(f"configs/sample.py: unknown variant {arg!r} (there are none)")
    config = ml_collections.ConfigDict()
    config.checkpoint = config_dict.placeholder(str)   # the model directory (required)
    # A 3DGS .ply, a mesh (.obj, .glb, .gltf, .ply with faces) or 'builtin'.
    config.object = "builtin"
    config.prompt = config_dict.placeholder(str)       # what the object does (required)
    config.out = "out/sample.mp4"      # the views side by side, left to right (.mp4/.gif)
    config.per_view = False            # also <stem>_view<k><ext>, one video per view
    config.clip = config_dict.placeholder(str)  # also a clip folder for t4a_jax.reconstruct
    config.views = config_dict.placeholder(int)        # V, evenly spaced in azimuth
    config.frames = config_dict.placeholder(int)       # F per view, condition included
    config.size = config_dict.placeholder(int)         # square frames, pixels
    config.steps = config_dict.placeholder(int)        # DDIM steps
    config.guidance = config_dict.placeholder(float)   # CFG scale (1: none)
    config.seed = 0                    # sampling seed
    config.init_strength = 1.0         # 1: frames start from noise; < 1: SDEdit from the condition
    config.elevation = 15.0            # degrees (Animate3D's inference elevation)
    config.azimuth = 0.0               # azimuth of the first view, degrees
    config.fps = 8.0                   # MV-Video's 24 fps at frame stride 3
    config.tile_capacity = 1024        # Gaussians per 16x16 tile to start with (grows)
    config.mesh_samples = 20000        # Gaussians sampled on a mesh's triangles
    config.asset_seed = 0              # the built-in object and mesh sampling

    # Where neither the command line nor the bundle's sampling.json says.
    config.defaults = ml_collections.ConfigDict()
    config.defaults.views = 4
    config.defaults.frames = 16
    config.defaults.size = 256
    config.defaults.steps = 25
    config.defaults.guidance = 7.5
    return config
