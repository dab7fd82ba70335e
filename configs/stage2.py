"""Stage Two (`python -m t4a_jax.reconstruct --config=configs/stage2.py`): fit a 4D
Gaussian asset to a multi-view video.

    python -m t4a_jax.reconstruct --config=configs/stage2.py --config.clip=DIR --workdir=OUT
    python -m t4a_jax.reconstruct --config=configs/stage2.py:tiny --workdir=/tmp/s2_tiny

The default is the paper's setup (Appendix A): the hybrid feature (one HexPlane scale
[100, 100, 100, 8] with 16 channels beside the Stage One U-Net's features at
`feature_tap`, projected to 16), planes at lr 0.01 and the decoder at 1e-4, 1000
iterations of 4 views x 16 frames, frames added progressively (one more every 50
iterations), L_rec with colour and mask weights 100; from iteration 750 the second
phase adds 4D-SDS (weight 0.01, 4 random views x 16 frames at 256 px, t in [20, 200],
guidance 5) and ARAP (weight 10). It needs `stage_one`, a Stage One model bundle
(`t4a_jax.models.load_bundle`: the training's WORKDIR/models or converted weights).

Variant `tiny`: a CPU demo in about 3 minutes without a Stage One model (HexPlane
features, no 4D-SDS), on a synthetic creature generated into OUT/data (8 views of 8 frames at 64 px, 2048 Gaussians): 4 training views, 4 held out;
200 iterations of 4 frames x 4 views, a coarse [8, 8, 8, 8] plane (at 64 px a finer one
fits the training views better and the held-out views and the true motion worse),
planes at lr 0.03 and the decoder at 3e-3 (fewer iterations), static colour (sh_terms 1:
a creature's colours do not change, and a 4D SH could imitate small motions by colour),
ARAP (weight 1) from iteration 150.

Inputs: `clip` is one clip folder (`t4a_jax.reconstruction.clips`: an animation
ROOT/videos/<uid>/<anim> of a multi-view set, or a folder written by
`python -m t4a_jax.sample --config.clip=...`); `clips` fits several objects in one
sharded program (a comma-separated list, or a folder of clip folders). `static`
overrides the canonical asset of a single clip.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Inputs: exactly one of clip / clips (tiny: generated when both are unset).
    config.clip = config_dict.placeholder(str)
    config.clips = config_dict.placeholder(str)
    config.static = config_dict.placeholder(str)  # the canonical asset (default: the clip's)
    config.views = 4               # training views, evenly spaced; the others are held out
    config.frames = config_dict.placeholder(int)  # frames used (default: all)
    config.frame_stride = 1
    config.mask_threshold = 0.1    # background masks: colour difference in [0, 1]
    config.mesh_samples = 20000    # Gaussians sampled on a mesh asset

    # The 4D representation (t4a_jax.fourd.MotionConfig).
    config.motion = ml_collections.ConfigDict()
    config.motion.resolutions = ((100, 100, 100, 8),)   # per scale (x, y, z, t)
    config.motion.channels = 16
    config.motion.margin = 0.1     # box around the canonical centres, x extent
    config.motion.width = 64       # decoder width
    config.motion.depth = 1        # decoder trunk layers
    config.motion.sh_terms = 4     # w cosine terms of the 4D SH (1: static colour)
    config.motion.feature_dim = 16 # the diffusion features' width after the projection

    # Stage One's priors (t4a_jax.reconstruction.priors). Ablations (paper Table 4):
    # features='hexplane' ("w/o Di. Feat"), motion.sh_terms=1 ("w/o 4D SH"),
    # sds.weight=0, loss.arap=0.
    config.stage_one = config_dict.placeholder(str)   # the Stage One model bundle
    config.features = "hybrid"     # 'hybrid' (HexPlane + diffusion features) or 'hexplane'
    config.feature_tap = "up_blocks.1.motion_modules.2"
    config.feature_timestep = 50   # the noise level of the feature pass
    config.sds = ml_collections.ConfigDict()
    config.sds.weight = 0.01       # lambda5; 0: no 4D-SDS
    config.sds.start = 750         # the second phase (with ARAP from loss.arap_start)
    config.sds.views = 4
    config.sds.frames = 16
    config.sds.size = 256
    config.sds.guidance = 5.0
    config.sds.t_min = 20
    config.sds.t_max = 200
    config.sds.param_dtype = "bfloat16"   # the frozen U-Net and VAE on device

    # The optimiser (t4a_jax.fourd.OptimizerConfig).
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.planes_lr = 0.01
    config.optimizer.heads_lr = 1e-4
    config.optimizer.sh4d_lr = 2.5e-3
    config.optimizer.eps = 1e-15

    # The step (t4a_jax.reconstruction.step.StepConfig).
    config.loss = ml_collections.ConfigDict()
    config.loss.color = 100.0
    config.loss.mask = 100.0
    config.loss.arap = 10.0
    config.loss.arap_start = 750   # iteration from which ARAP is on
    config.loss.arap_anchors = 4096
    config.loss.neighbours = 3
    config.loss.tv = 0.0           # HexPlane total variation
    config.loss.time = 0.0         # time-plane smoothness
    config.frames_per_step = 16    # frames per iteration, each in all training views
    config.progressive_every = 50  # one more frame in play every this many iterations
    config.progressive_initial = 1
    config.tile_capacity = 1024    # raised to what the static asset needs x1.5

    # The run.
    config.iterations = 1000
    config.stop_after = config_dict.placeholder(int)   # stop (and save) at this iteration
    config.seed = 0
    config.log_every = 10
    config.checkpoint_every = 250
    config.mesh_data = config_dict.placeholder(int)    # devices on 'data' (default: objects)
    config.turntable_frames = 48

    # The tiny variant's generated object (data.synthetic).
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.enabled = False
    config.synthetic.objects = 1
    config.synthetic.views = 8
    config.synthetic.frames = 8
    config.synthetic.size = 64
    config.synthetic.num_gaussians = 2048

    if arg == "tiny":
        config.synthetic.enabled = True
        config.features = "hexplane"   # no Stage One model in the demo
        config.sds.weight = 0.0
        config.motion.resolutions = ((8, 8, 8, 8),)
        config.motion.sh_terms = 1
        config.optimizer.planes_lr = 0.03
        config.optimizer.heads_lr = 3e-3
        config.loss.arap = 1.0
        config.loss.arap_start = 150
        config.loss.arap_anchors = 1024
        config.frames_per_step = 4
        config.progressive_every = 10
        config.iterations = 200
        config.checkpoint_every = 100
        config.turntable_frames = 16
    elif arg:
        raise ValueError(f"configs/stage2.py: unknown variant {arg!r} (known: 'tiny')")
    return config
