"""Stage One training (`python -m t4a_jax.train --config=configs/stage1.py[:tiny]`).

Variants:
  (default) the paper's setup (Track4Animate3D Sec. 3.2 / 4.1, Animate3D where the paper
        is silent): the full MV-VDM initialised from converted checkpoints
        (`init_from`, required: `unet/ vae/ text_encoder/ tokenizer/ image_encoder/`, as
        written by `python -m tools.convert_weights`), MV-Video at 256x256, 4 views x 16
        frames (stride 3, random start 0-2), only the I2V adapter and motion modules
        trained, AdamW lr 1e-6, weight decay 0.01, constant schedule after a linear
        warmup, gradient clipping, loss weights (1.0, 0.1, 10), bf16 compute with f32
        master weights and optimizer state, rematerialisation, gradient accumulation.
  tiny  the demo that needs nothing but the package: a small synthetic MV-Video set with
        exact tracks is generated in WORKDIR/data on first use (plus one held-out object
        for the sample videos), a two-level MV-VDM (every MV-VDM part on) and tiny VAE /
        CLIP towers are initialised at random, and it trains on the CPU in a few minutes
        with a falling loss (f32, no remat). Its random VAE is first fitted to the
        synthetic frames (300 steps, ~1 min), so sample videos show the creatures, and
        the whole U-Net is trained (its spatial layers are random, not Stable Diffusion's).

Every value can be overridden on the command line: `--config.optimizer.lr=1e-5`.
Numbers not given by the paper or Animate3D's code (batch, warmup, clipping, steps)
are ours and marked so.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections
from ml_collections import config_dict


def _sibling(name: str):
    """configs/<name>.py (configs/ is not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"t4a_configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "paper"
    if variant not in ("paper", "tiny"):
        raise ValueError(f"configs/stage1.py: unknown variant {arg!r} (known: default "
                         f"'paper', 'tiny')")
    diffusion = _sibling("diffusion").get_config()
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.seed = 0                      # model init (tiny), step RNG, data order

    # Models. `init_from`: a folder of converted checkpoints; without it only the tiny
    # variant starts, from `random_init` (U-Net sizes of configs/unet.py).
    config.init_from = config_dict.placeholder(str)
    config.random_init = ml_collections.ConfigDict()
    config.random_init.unet = _sibling("unet").get_config("mvvdm")
    config.random_init.encoders = "full"     # 'full' (SD1.5 VAE, CLIP L/14, H/14) or 'tiny'
    config.compute_dtype = "bfloat16"        # U-Net compute; parameters stay float32
    config.remat = True
    # U-Net parameters trained: 'paper' (the I2V adapter and motion modules) or 'all'.
    config.trainable = "paper"

    # Data (MV-Video layout, t4a_jax.data.mvvideo.MVVideoConfig).
    config.data = ml_collections.ConfigDict()
    config.data.root = config_dict.placeholder(str)          # required (paper)
    config.data.heldout_root = config_dict.placeholder(str)  # sample videos (optional)
    config.data.size = 256
    config.data.num_views = 4
    config.data.num_frames = 16
    config.data.frame_stride = 3
    config.data.max_start = 2
    config.data.tracks_dir = "tracks"
    config.data.exact_tracks_fallback = False
    config.data.missing_tracks = "skip"
    config.data.num_workers = 4
    config.data.read_threads = 1
    config.data.prefetch_batches = 2
    # Synthetic data generated into WORKDIR/data/{train,heldout} on first use (tiny).
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.enabled = False
    config.synthetic.num_objects = 4
    config.synthetic.heldout_objects = 1
    config.synthetic.frames = 8
    config.synthetic.num_gaussians = 1024

    # Optimisation.
    config.global_batch_size = 8             # ours: objects per step, all hosts
    config.grad_accum_steps = 1              # micro-batches per step (lax.scan)
    config.total_steps = 20_000              # ours
    config.stop_after = config_dict.placeholder(int)  # stop (and save) at this step
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.lr = 1e-6
    config.optimizer.warmup_steps = 500      # ours; then constant
    config.optimizer.weight_decay = 0.01
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.grad_clip_norm = 1.0    # ours (diffusers' max_grad_norm default)
    config.skip_nonfinite = False            # False: stop on a non-finite loss

    # Objective (t4a_jax.training.objective.StageOneLossConfig) and noise schedule.
    config.loss = ml_collections.ConfigDict()
    config.loss.diffusion_weight = 1.0
    config.loss.correspondence_weight = 0.1
    config.loss.position_weight = 10.0
    config.loss.feature_tap = "up_blocks.1.motion_modules.2"
    config.loss.points_per_view = 8
    config.loss.condition_noise = diffusion.condition_noise
    config.schedule = diffusion.schedule

    # Parallelism: mesh ('data', 'fsdp'); -1 = all devices the other axis leaves.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.distributed = False               # jax.distributed.initialize() (multi-host)

    # Checkpoints (WORKDIR/checkpoints), logs (console, WORKDIR/tb), samples.
    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 1000
    config.checkpoint.max_to_keep = 3
    config.checkpoint.async_save = True
    config.log_every = 10
    config.sample = ml_collections.ConfigDict()
    config.sample.every_steps = 2000         # 0: never
    config.sample.num_objects = 2
    config.sample.num_steps = diffusion.sampler.num_steps
    config.sample.guidance_scale = diffusion.sampler.guidance_scale
    config.sample.eta = diffusion.sampler.eta
    config.sample.fps = 8
    config.export_models = True              # WORKDIR/models/{unet,vae,...} at the end
    # Fit a random VAE to the training frames first (t4a_jax.training.vae_fit; cached in
    # WORKDIR/vae_fit): 0 = no. Only without init_from (converted VAEs are trained).
    config.vae_fit = ml_collections.ConfigDict()
    config.vae_fit.steps = 0
    config.vae_fit.batch_size = 32
    config.vae_fit.lr = 2e-3
    config.vae_fit.kl_weight = 1e-6

    if variant == "tiny":
        config.random_init.unet = _sibling("unet").get_config("tiny_all_parts")
        config.random_init.encoders = "tiny"
        config.compute_dtype = "float32"
        config.remat = False
        config.synthetic.enabled = True
        config.data.size = 16
        config.data.num_frames = 8
        config.data.frame_stride = 1
        config.data.max_start = 0
        config.data.tracks_dir = "exact_tracks"
        config.data.num_workers = 0
        config.global_batch_size = 2
        config.total_steps = 200
        config.optimizer.lr = 1e-3
        config.optimizer.warmup_steps = 20
        config.loss.feature_tap = "up_blocks.1.motion_modules.1"
        config.checkpoint.every_steps = 100
        config.checkpoint.max_to_keep = 2
        config.log_every = 10
        config.sample.every_steps = 100
        config.sample.num_objects = 1
        config.sample.num_steps = 4
        config.sample.guidance_scale = 3.0
        config.vae_fit.steps = 300           # a random VAE decodes to noise
        config.trainable = "all"             # random spatial layers must learn too
    return config
