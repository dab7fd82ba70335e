"""The paper's tables from one command (`python -m t4a_jax.evaluate`).

    python -m t4a_jax.evaluate --config=configs/evaluate.py \
        --config.methods=ours=out/clips,animate3d=baselines/animate3d \
        --config.weights=weights --config.dataset=diffusion4d --workdir=out/eval
    python -m t4a_jax.evaluate --config=configs/evaluate.py:tiny --workdir=out/eval_tiny

- `methods`: NAME=DIR, comma-separated; DIR holds clip folders (Table 1) and/or 4D
  assets (Table 2), found recursively (`t4a_jax.evaluate.job`).
- `weights`: the evaluation networks' folder (`t4a_jax.evaluation.networks`: dino/,
  clip/, aesthetic/ converted by `python -m tools.convert_weights`, raft-things.pth,
  amt-s.pth).
- `dataset`: whose paper numbers go beside ours in tables.md ('diffusion4d',
  'animate3d', 'sketchfab28'; '' for none).
- `skip_first_frame`: leave frame 0 (the condition render) out of I2V (VBench keeps it).
- `flow`, `interpolator`: the torch plugins for the dynamic degree (RAFT-large) and
  motion smoothness (AMT-S), by import path; '' leaves the column out ("n/a").
- `rig`: Animate3D's test rig for the 4D renders (16 frames, distance 3, fovy 40; the
  renders' size, the background grey level).
- `ablations`: 'stage1' or 'stage2' runs Table 4's variants (`t4a_jax.evaluate.ablations`)
  on the objects of `ablation.clips` (clip folders): Stage One trained per variant with
  `ablation.stage1` (configs/stage1.py: set its data and init_from) and sampled with
  `ablation.sample`, or Stage Two fitted per variant with `ablation.stage2`
  (configs/stage2.py) and the Stage One bundle `ablation.models`.

Variant `tiny`: random-weight networks and a synthetic set made in WORKDIR/tiny
(`t4a_jax.evaluate.tiny`), no RAFT or AMT-S; runs in about a minute on 2 CPU cores.
With `--config.ablations=stage1|stage2` it ablates on that set with a few steps of
the tiny Stage One / Stage Two (a random tiny Stage One bundle for stage2's features).
"""

from __future__ import annotations

import ml_collections

from t4a_jax.config_files import get_config as get_config_file
from t4a_jax.evaluation.clip_scores import RIG_FRAMES
from t4a_jax.render.views import ORBIT_DISTANCE, ORBIT_FOVY


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "tiny"):
        raise ValueError(f"configs/evaluate.py: unknown variant {arg!r} (known: 'tiny')")
    config = ml_collections.ConfigDict()
    config.methods = ""
    config.weights = ""
    config.dataset = ""
    config.skip_first_frame = False
    config.flow = "tools.raft:RAFTFlow"
    config.interpolator = "tools.amt:AMTInterpolator"
    config.batch_size = 16               # images per network call
    config.rig = ml_collections.ConfigDict(dict(
        frames=RIG_FRAMES, size=256, distance=ORBIT_DISTANCE, fovy=ORBIT_FOVY,
        background=1.0))
    config.ablations = ""                # '', 'stage1' or 'stage2'
    config.ablation = ml_collections.ConfigDict()
    config.ablation.clips = ""           # the ablation's evaluation objects (clip folders)
    config.ablation.stage1 = get_config_file("stage1")
    config.ablation.sample = ml_collections.ConfigDict()
    sample = get_config_file("sample")
    for key in ("views", "frames", "size", "steps", "guidance", "seed", "init_strength",
                "elevation", "azimuth", "fps", "tile_capacity"):
        config.ablation.sample[key] = sample[key]
    config.ablation.sample.defaults = sample.defaults
    config.ablation.sample_batch = 4     # objects sampled together
    config.ablation.stage2 = get_config_file("stage2")
    config.ablation.models = ""          # stage2: the Stage One bundle (features, SDS)
    config.tiny = False
    config.tiny_set = ml_collections.ConfigDict(dict(
        objects=2, views=4, frames=8, size=64, seed=0, num_gaussians=1024))
    if arg == "tiny":
        config.tiny = True
        config.flow = config.interpolator = ""
        config.rig.update(frames=4, size=32)
        config.batch_size = 8
        # Ablations on the tiny set: a few steps of each stage's tiny variant.
        stage1 = config.ablation.stage1 = get_config_file("stage1", "tiny")
        stage1.update(total_steps=2, log_every=1)
        stage1.vae_fit.steps = 10
        stage1.sample.every_steps = 0
        stage1.synthetic.num_objects = 2
        config.ablation.sample.update(views=4, frames=8, size=16, steps=2, init_strength=0.6,
                                      elevation=0.0)
        stage2 = config.ablation.stage2 = get_config_file("stage2", "tiny")
        stage2.update(features="hybrid", iterations=4, views=2, turntable_frames=4)
        stage2.motion.sh_terms = 2       # the full variant's 4D SH (stage2.py:tiny has 1)
        stage2.feature_tap = stage1.loss.feature_tap
        stage2.loss.arap_start = 2
    return config
