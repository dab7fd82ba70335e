"""Stage Two as a job: `run(config, workdir)` over an ml_collections config
(`configs/stage2.py`), the body of `python -m t4a_jax.reconstruct` and of the animate
job's Stage Two.

`run` reads and checks the clips (`reconstruction.clips`; with the `tiny` variant it
first generates a synthetic creature into WORKDIR/data), loads the Stage One bundle when
the priors need it (`config.stage_one`; the diffusion-feature inputs are computed once
per clip into WORKDIR/priors, `reconstruction.priors`), splits each clip's views into
`config.views` evenly spaced training views and held-out ones, fits all objects' motion
fields in one sharded program (`reconstruction.loop.fit`: progress bar, TensorBoard in
WORKDIR/tb, checkpoints in WORKDIR/checkpoints, resume, SIGTERM) and writes each
object's outputs (`reconstruction.outputs`: per-frame .ply files, the 4D asset, the
views and turntable videos, metrics.json) into WORKDIR for one clip or WORKDIR/<name>
for several (name: the clip's, '/' -> '_').
"""


from __future__ import annotations

import os
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging

from t4a_jax.data import synthetic
from t4a_jax.fourd import HexPlaneConfig, MotionConfig, OptimizerConfig
from t4a_jax.models import ModelBundle, load_bundle
from t4a_jax.reconstruction.asset import Asset4D, frame_features
from t4a_jax.reconstruction.clips import Clip, clip_folders, load_clip
from t4a_jax.reconstruction.loop import FitConfig, fit
from t4a_jax.reconstruction.outputs import export_object
from t4a_jax.reconstruction.priors import (SDSConfig, SDSTerm, feature_inputs,
                                           load_or_compute_features)
from t4a_jax.reconstruction.step import StepConfig


FEATURE_MODES = ("hybrid", "hexplane")


def fit_config(config: ml_collections.ConfigDict, feature_channels: int = 0) -> FitConfig:
    """The library configs of `config` (ValueError naming a bad value); a hybrid field
    reads `feature_channels` U-Net channels."""
    m, o, loss = config.motion, config.optimizer, config.loss
    motion = MotionConfig(
        hexplane=HexPlaneConfig(resolutions=tuple(tuple(r) for r in m.resolutions),
                                channels=m.channels, margin=m.margin),
        width=m.width, depth=m.depth, sh_terms=m.sh_terms,
        feature_channels=feature_channels, feature_dim=m.feature_dim)
    step = StepConfig(frames_per_step=config.frames_per_step, color_weight=loss.color,
                      mask_weight=loss.mask, arap_weight=loss.arap,
                      arap_start=loss.arap_start, arap_anchors=loss.arap_anchors,
                      tv_weight=loss.tv, time_weight=loss.time,
                      progressive_every=config.progressive_every,
                      progressive_initial=config.progressive_initial,
                      tile_capacity=config.tile_capacity)
    if config.iterations < 1:
        raise ValueError(f"config.iterations={config.iterations} must be >= 1")
    return FitConfig(motion=motion, optimizer=OptimizerConfig(o.planes_lr, o.heads_lr,
                                                              o.sh4d_lr, o.eps),
                     step=step, iterations=config.iterations, seed=config.seed,
                     log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                     stop_after=config.stop_after, mesh_data=config.mesh_data,
                     neighbours=loss.neighbours)


def input_folders(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """The clip folders to fit: `clip`, `clips`, or (synthetic) the generated set's."""
    given = [key for key in ("clip", "clips") if config[key]]
    if len(given) > 1:
        raise ValueError("set one of config.clip and config.clips, not both")
    if given:
        if config.synthetic.enabled:
            raise ValueError(f"config.{given[0]} and config.synthetic.enabled: choose one")
        return clip_folders(config[given[0]])
    if not config.synthetic.enabled:
        raise ValueError("config.clip (or config.clips) is required")
    s = config.synthetic
    root = os.path.join(workdir, "data")
    spec = synthetic.DatasetSpec(views=s.views, frames=s.frames, size=s.size,
                                 seed=config.seed, num_gaussians=s.num_gaussians)
    logging.info(synthetic.generate_dataset(root, s.objects, spec))
    items = synthetic.plan(spec, s.objects, 1)
    return [os.path.join(root, "videos", item.uid, item.anim) for item in items]


def training_views(num_views: int, count: int, name: str) -> np.ndarray:
    """`count` evenly spaced view indices [count] of a clip with `num_views` views."""
    if count < 1 or num_views % count:
        raise ValueError(f"config.views={count}: clip {name} has {num_views} views, which "
                         f"{count} evenly spaced training views must divide")
    return np.arange(count) * (num_views // count)


def stage_one_bundle(config: ml_collections.ConfigDict) -> ModelBundle | None:
    """The Stage One models the priors need (None when neither is on)."""
    if config.features not in FEATURE_MODES:
        raise ValueError(f"config.features={config.features!r}, expected one of "
                         f"{FEATURE_MODES}")
    if config.features == "hexplane" and not config.sds.weight:
        return None
    if not config.stage_one:
        raise ValueError("config.stage_one (a Stage One model bundle) is required for "
                         "features='hybrid' and sds.weight > 0; without one, set "
                         "--config.features=hexplane --config.sds.weight=0")
    bundle = load_bundle(config.stage_one, require=("unet", "vae"))
    factor = bundle.vae.config.downsample_factor * bundle.unet.config.downsample_factor
    if config.sds.weight and config.sds.size % factor:
        raise ValueError(f"config.sds.size={config.sds.size} must be a multiple of {factor}")
    return bundle


def sds_term(config: ml_collections.ConfigDict, bundle: ModelBundle,
             clips: Sequence[Clip]) -> SDSTerm | None:
    """The 4D-SDS term of the clips (one prompt: the term's text states are shared)."""
    if not config.sds.weight:
        return None
    prompts = {clip.prompt for clip in clips}
    if len(prompts) > 1:
        raise ValueError(f"4D-SDS fits objects of one prompt per program; the clips have "
                         f"{sorted(prompts)}")
    s = config.sds
    radius = 1.1 * max(float(np.linalg.norm(np.asarray(c.canonical.means), axis=-1).max())
                       for c in clips)
    return SDSTerm.build(bundle, clips[0].prompt, SDSConfig(
        weight=s.weight, start=s.start, views=s.views, frames=s.frames, size=s.size,
        guidance=s.guidance, t_min=s.t_min, t_max=s.t_max, param_dtype=s.param_dtype),
        radius)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fit and export (module docstring); returns {"metrics": [per object], "step",
    "stopped", "outputs": [folders], "wall_s", "history": [(iteration, {metric: [O]})]}.
    Raises ValueError naming a bad key or file."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    fit_config(config)                                     # config errors before any work
    bundle = stage_one_bundle(config)
    folders = input_folders(config, workdir)
    if config.static and len(folders) > 1:
        raise ValueError("config.static names one asset; it cannot serve several clips")
    clips = [load_clip(folder, static=config.static, mask_threshold=config.mask_threshold,
                       num_frames=config.frames, frame_stride=config.frame_stride,
                       mesh_samples=config.mesh_samples) for folder in folders]
    views = {clip.num_views for clip in clips}
    if len(views) > 1:
        raise ValueError(f"the clips have different view counts {sorted(views)}")
    train = training_views(clips[0].num_views, config.views, clips[0].name)
    logging.info("%d object(s): %s; %d views (%d training), %d frames of %dx%d",
                 len(clips), ", ".join(c.name for c in clips), clips[0].num_views,
                 len(train), clips[0].num_frames, *clips[0].size)
    priors = None
    if config.features == "hybrid":
        priors = [load_or_compute_features(
            os.path.join(workdir, "priors", clip.name.replace("/", "_") + ".npz"),
            lambda clip=clip: feature_inputs(bundle, clip, train, tap=config.feature_tap,
                                             timestep=config.feature_timestep,
                                             seed=config.seed)) for clip in clips]
    library = fit_config(config, 0 if priors is None else priors[0].maps.shape[-1])
    sds = sds_term(config, bundle, clips)
    result = fit(clips, train, library, workdir, priors=priors,
                 extra_loss=None if sds is None else sds.loss,
                 frozen=None if sds is None else sds.frozen)
    outputs, metrics = [], []
    if result.stopped == "done":
        for i, (clip, field) in enumerate(zip(clips, result.fields)):
            out = workdir if len(clips) == 1 else os.path.join(workdir,
                                                                 clip.name.replace("/", "_"))
            asset = Asset4D(field, clip.canonical, library.motion, clip.num_frames, clip.fps,
                            clip.name, clip.prompt,
                            None if priors is None else frame_features(field, priors[i]))
            metrics.append(export_object(out, asset, clip, train,
                                         turntable=config.turntable_frames))
            outputs.append(out)
            summary = " ".join(f"{part} {k} {v:.4g}" for part in ("train", "heldout")
                               for k, v in metrics[-1].get(part, {}).items())
            logging.info("%s -> %s: %s", clip.name, out, summary)
    return {"metrics": metrics, "step": result.step, "stopped": result.stopped,
            "outputs": outputs, "wall_s": result.wall_s, "history": result.history}
