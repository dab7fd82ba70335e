"""The whole job (`python -m t4a_jax.animate --config=configs/animate.py`): a static 3D
model and a prompt in, an animated 3D asset out.

    python -m t4a_jax.animate --config=configs/animate.py --config.asset=model.glb \
        --config.prompt="a dog is running" --config.models=ckpt/mvvdm_pipeline \
        --workdir=out/dog
    python -m t4a_jax.animate --config=configs/animate.py:tiny --workdir=out/animate_tiny

Stages (each in WORKDIR/<stage>, skipped when finished with the same inputs, resumed
when killed; `redo=STAGE[,STAGE]` forces them): `stage_one` (tiny only: trains the tiny
Stage One model), `asset`, `condition`, `sample`, `reconstruct`, `export`. See
`t4a_jax.animate` for what each writes.

- `asset`: a 3DGS `.ply`, or a mesh (`.obj`, `.glb`, `.gltf`, `.ply` with faces); it is
  centred and scaled so its farthest Gaussian centre lies `radius` from the centre
  (0.8: the object fills about three quarters of the frame on the Animate3D orbit,
  distance 3, field of view 40 degrees); `up` is the file's up axis ('auto': y for glTF
  files, as that format defines, z otherwise).
- `models`: a Stage One model bundle (`t4a_jax.models.load_bundle`: the training's
  WORKDIR/models or `python -m tools.convert_weights` output).
- `sample`: Stage One sampling; unset views / frames / size / steps / guidance come
  from the bundle's sampling.json, else the paper's 4 x 16 at 256 px, DDIM 25, CFG 7.5.
- `stage2`: Stage Two (`configs/stage2.py`, the paper's setup); `clip`, `clips`,
  `static`, `synthetic` and `stage_one` are set by the job.
- `export`: what WORKDIR/export gets (turntable and comparison video size, the
  viewer's video quality and tracks).

Variant `tiny`: the README's demo, needing nothing but the package. It trains the tiny
Stage One model (`configs/stage1.py:tiny`, its VAE first fitted to the synthetic
frames) in WORKDIR/stage_one, then animates a held-out synthetic creature with its own
prompt (HexPlane features, no 4D-SDS: the tiny U-Net's features carry little) and writes
every export, in about 14 minutes on 2 CPU cores. A 16 px model trained for 200 steps
cannot draw the creature from noise, so its sampling starts the frames from the
condition render noised to 60 % (`sample.init_strength=0.6`, SDEdit; the paper's
setting is 1.0, pure noise).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from t4a_jax.config_files import get_config as get_config_file


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "tiny"):
        raise ValueError(f"configs/animate.py: unknown variant {arg!r} (known: 'tiny')")
    config = ml_collections.ConfigDict()
    config.asset = config_dict.placeholder(str)     # the static model (required)
    config.prompt = config_dict.placeholder(str)    # what it does (required)
    config.models = config_dict.placeholder(str)    # the Stage One bundle (required)
    config.jobs = config_dict.placeholder(str)      # a file of "asset<TAB>prompt" lines
    config.redo = ""                 # stages to run again, comma-separated
    config.radius = 0.8              # the normalised asset's bounding radius
    config.up = "auto"               # the file's up axis: 'auto', 'z' or 'y'
    config.mesh_samples = 20000      # Gaussians sampled on a mesh's triangles
    config.asset_seed = 0            # mesh sampling

    # Stage One sampling (t4a_jax.sampling; keys as configs/sample.py).
    config.sample = ml_collections.ConfigDict()
    sample = get_config_file("sample")
    for key in ("views", "frames", "size", "steps", "guidance", "seed", "init_strength",
                "elevation", "azimuth", "fps", "tile_capacity"):
        config.sample[key] = sample[key]
    config.sample.defaults = sample.defaults

    # Stage Two (configs/stage2.py).
    config.stage2 = get_config_file("stage2")

    # Exports.
    config.export = ml_collections.ConfigDict()
    config.export.video_size = 256       # turntable size (the 4D asset renders at any)
    config.export.turntable_frames = 48
    config.export.jpeg_quality = 85      # the viewer's video frames
    config.export.track_grid = 6         # tracks per view: a grid of this many squared
    config.export.feature_tap = "up_blocks.1.motion_modules.2"   # the tracker's features

    # The tiny variant's own Stage One (trained when `models` is unset).
    config.stage_one = None
    config.tiny_creature_seed = config_dict.placeholder(int)   # tiny: the animated creature

    if arg == "tiny":
        config.stage_one = get_config_file("stage1", "tiny")
        config.tiny_creature_seed = 1234
        config.stage2 = get_config_file("stage2", "tiny")
        config.stage2.views = 4          # the sampled video's 4 views, none held out
        # Blurred 16 px frames with small changes: a gentle fit that keeps the shape
        # (at stage2.py:tiny's rates the Gaussians scatter chasing the blur).
        config.stage2.optimizer.planes_lr = 0.003
        config.stage2.optimizer.heads_lr = 3e-4
        config.stage2.loss.update(arap=10.0, arap_start=0, tv=0.01, time=0.01)
        config.stage2.feature_tap = config.export.feature_tap = config.stage_one.loss.feature_tap
        config.stage2.synthetic.enabled = False
        # 200 training steps do not make a model that draws the creature from noise:
        # its frames start from the condition render noised to 60 % (SDEdit).
        config.sample.steps = 10
        config.sample.init_strength = 0.6
        config.export.turntable_frames = 24
    return config
