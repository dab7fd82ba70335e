"""The ablations of the paper's Table 4, run through the existing jobs and scored with
Table 1's video metrics (`--config.ablations=stage1` or `stage2`).

- stage1 (Table 4 left): Stage One trained once per variant (`training.loop.train` on
  `config.ablation.stage1`, one switch each: the correspondence or the position loss
  weight set to 0), each model then samples every evaluation object
  (`config.ablation.clips`: clip folders, whose static asset and prompt are used;
  `sampling.sample_videos` with `config.ablation.sample`, `sample_batch` objects per
  batch), and the sampled clips are scored like a method's.
- stage2 (Table 4 right): Stage Two fitted once per variant to the evaluation clips
  (`reconstruction.job.run` on `config.ablation.stage2` with `config.ablation.models` as
  its Stage One model; switches: `features='hexplane'`, `motion.sh_terms=1`), each 4D
  asset rendered at its clip's cameras at every frame, and those videos scored against
  the clip's condition images (the static asset from each camera).

Layout: WORKDIR/ablations/<stage>/<variant>/ with train/ and clips/ (stage1: the
training run, resumed when killed, and the sampled clips, kept while the model's files
are unchanged: clips/sampled.json records their digest) or fit/ (stage2: the Stage Two
run, resumed). `run_ablation` returns the items; `evaluate.job` scores them through its
per-item cache.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import ml_collections
import numpy as np

from t4a_jax.reconstruction import job as stage_two
from t4a_jax.reconstruction.asset import load_asset4d
from t4a_jax.reconstruction.clips import Clip, clip_folders, load_clip, write_clip
from t4a_jax.reconstruction.outputs import render_views
from t4a_jax.render.views import ViewRenderer
from t4a_jax.config_files import set_key
from t4a_jax.models import load_bundle
from t4a_jax.sampling import render_conditions, resolve, sample_videos
from t4a_jax.stages import fingerprint, tree_digest
from t4a_jax.training.loop import train
from t4a_jax.video import to_uint8

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "stage1": {"Ours full": {},
               "w/o Corrs. Loss": {"loss.correspondence_weight": 0.0},
               "w/o Pos. Loss": {"loss.position_weight": 0.0}},
    "stage2": {"Ours full": {},
               "w/o Di. Feat": {"features": "hexplane"},
               "w/o 4D SH": {"motion.sh_terms": 1}},
}


def slug(variant: str) -> str:
    """A folder name for a variant: 'w/o Corrs. Loss' -> 'wo_corrs_loss'."""
    return re.sub(r"[^a-z0-9]+", "_", variant.lower().replace("w/o", "wo")).strip("_")


def variant_config(base: ml_collections.ConfigDict, switches: dict[str, Any]
                   ) -> ml_collections.ConfigDict:
    """A copy of `base` with the variant's switches (dotted keys) set."""
    config = ml_collections.ConfigDict(base.to_dict())
    for key, value in switches.items():
        try:
            set_key(config, key, value)
        except ValueError as e:
            raise ValueError(f"ablation switch {key!r}: {e}") from None
    return config


def stage1_clips(config: ml_collections.ConfigDict, switches: dict[str, Any], folder: str,
                 eval_clips: list[str]) -> list[str]:
    """Train the variant, sample every evaluation object; its clip folders."""
    training = variant_config(config.ablation.stage1, switches)
    train_dir = os.path.join(folder, "train")
    train(training, train_dir)
    models = os.path.join(train_dir, "models")
    bundle = load_bundle(models)
    settings = resolve(config.ablation.sample, bundle)
    stamp = fingerprint({"models": tree_digest(models), "settings": settings.to_dict()})
    out = os.path.join(folder, "clips")
    record = os.path.join(out, "sampled.json")
    if not (os.path.isfile(record) and open(record).read() == stamp):
        shutil.rmtree(out, ignore_errors=True)
    clips = [load_clip(c) for c in eval_clips]
    folders = [os.path.join(out, c.name.replace("/", "_")) for c in clips]
    todo = [(c, f) for c, f in zip(clips, folders)
            if not os.path.isfile(os.path.join(f, "clip.json"))]
    batch = config.ablation.sample_batch
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        conditions = [render_conditions(c.canonical, settings) for c, _ in chunk]
        videos = sample_videos(bundle, [(views, render, c.prompt) for (c, _), (views, render)
                                        in zip(chunk, conditions)], settings)
        for (clip, target), (views, render), video in zip(chunk, conditions, videos):
            write_clip(target, video, views, render.alphas, clip.canonical,
                       prompt=clip.prompt, fps=settings.fps, elevation=settings.elevation,
                       azimuth_start=settings.azimuth)
    os.makedirs(out, exist_ok=True)
    with open(record, "w") as f:
        f.write(stamp)
    return folders


def stage2_renders(config: ml_collections.ConfigDict, switches: dict[str, Any], folder: str,
                   eval_clips: list[str]) -> list[tuple[str, str]]:
    """Fit the variant to the evaluation clips; [(clip folder, fitted asset folder)]."""
    fitting = variant_config(config.ablation.stage2, switches)
    fitting.clip, fitting.clips = (eval_clips[0], None) if len(eval_clips) == 1 else (
        None, ",".join(eval_clips))
    fitting.static = None
    fitting.synthetic.enabled = False
    fitting.stage_one = config.ablation.models or None
    fit_dir = os.path.join(folder, "fit")
    stage_two.run(fitting, fit_dir)
    pairs = []
    for clip_folder in eval_clips:
        name = load_clip(clip_folder).name.replace("/", "_")
        out = fit_dir if len(eval_clips) == 1 else os.path.join(fit_dir, name)
        pairs.append((clip_folder, os.path.join(out, "asset")))
    return pairs


def asset_videos(clip: Clip, asset_folder: str) -> np.ndarray:
    """uint8 [V, F, H, W, 3]: the 4D asset at its clip's cameras, every frame, over the
    clip's background."""
    h, w = clip.size
    colors, _ = render_views(load_asset4d(asset_folder), clip,
                             ViewRenderer(w, h, background=clip.background))
    return to_uint8(colors)


def run_ablation(stage: str, config: ml_collections.ConfigDict, workdir: str
                 ) -> dict[str, list[tuple[str, ...]]]:
    """Run every variant of `stage` (module docstring) -> {variant: items}, an item
    ("clip", clip folder) for stage1 and ("renders", clip folder, asset folder) for
    stage2, for the evaluation to score."""
    if stage not in VARIANTS:
        raise ValueError(f"config.ablations={stage!r}, expected one of {sorted(VARIANTS)}")
    if not config.ablation.clips:
        raise ValueError("config.ablation.clips is required: the evaluation objects "
                         "(clip folders) of the ablation")
    eval_clips = clip_folders(config.ablation.clips)
    if stage == "stage2" and not config.ablation.models and any(
            variant_config(config.ablation.stage2, s).features == "hybrid"
            for s in VARIANTS[stage].values()):
        raise ValueError("config.ablation.models is required for the stage2 ablation: the "
                         "Stage One model bundle whose features the full variant uses")
    items = {}
    for variant, switches in VARIANTS[stage].items():
        folder = os.path.join(workdir, "ablations", stage, slug(variant))
        if stage == "stage1":
            items[variant] = [("clip", c)
                              for c in stage1_clips(config, switches, folder, eval_clips)]
        else:
            items[variant] = [("renders", c, a)
                              for c, a in stage2_renders(config, switches, folder, eval_clips)]
    return items
