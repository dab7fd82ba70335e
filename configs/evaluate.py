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

Variant `tiny`: random-weight networks and a synthetic set made in WORKDIR/tiny
(`t4a_jax.evaluate.tiny`), no RAFT or AMT-S; runs in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import ml_collections

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
    config.tiny = False
    config.tiny_set = ml_collections.ConfigDict(dict(
        objects=2, views=4, frames=8, size=64, seed=0, num_gaussians=1024))
    if arg == "tiny":
        config.tiny = True
        config.flow = config.interpolator = ""
        config.rig.update(frames=4, size=32)
        config.batch_size = 8
    return config
