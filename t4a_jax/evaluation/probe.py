"""The tracking probe of paper Fig. 3: which U-Net block's features track points best?

    python -m t4a_jax.evaluation.probe --config=configs/probe.py            # tiny demo
    python -m t4a_jax.evaluation.probe --config=configs/probe.py \
        --config.data=MVVIDEO --config.models=ckpt/mvvdm_pipeline --config.tracks=tracks

One clip of a multi-view video (real or synthetic MV-Video layout, 4 views 90 degrees
apart, `frames` frames with `stride`, at `size` px) is VAE-encoded, slightly noised
(`timestep`, default 50 of 1000) and denoised once by the U-Net with every block
captured. For each block, the 15x15-grid query points of frame 1 (those on the object)
are tracked through the clip by cosine nearest neighbour in that block's features
(`feature_tracker.track_by_features`) and scored with TAP-Vid metrics against the
reference tracks (the track cache `tracks`: exact tracks of a synthetic set, or
CoTracker3's). It prints a table per block, writes it to `out/probe.json`, and saves
similarity heatmaps (`out/heatmap_<block>.png`: the frames with the tracked point, over
each frame's cosine-similarity map to its frame-1 descriptor) for the configured tap
and the best-scoring block.

Models: `models` is a model directory (`t4a_jax.models.load_bundle`: the output of
`python -m tools.convert_weights ... --kind pipeline`, or the training program's export)
holding `unet/` and `vae/`, and optionally `text_encoder/` with `tokenizer/` (else the text
tokens are zeros, the empty prompt's stand-in). Empty `models` builds a random tiny MV-VDM
and VAE (the demo: it runs end to end, and its random features track poorly). Empty `data`
generates a small synthetic set in `out/data` first.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags
from PIL import Image

from t4a_jax import models
from t4a_jax.atomic import atomic_write
from t4a_jax.config_files import config_path, get_config
from t4a_jax.data import synthetic
from t4a_jax.data.mvvideo import Clip, MVVideoConfig, load_example, read_index
from t4a_jax.models.unet import UNet, UNetConfig
from t4a_jax.pipeline import unet_features
from t4a_jax.models.vae import AutoencoderKL, VAEConfig
from t4a_jax.tracking.feature_tracker import (resize_features, similarity_maps,
                                              track_by_features)
from t4a_jax.tracking.losses import sample_descriptors
from t4a_jax.evaluation.tapvid import tapvid_metrics

METRICS = ("average_pts_within_thresh", "average_jaccard", "occlusion_accuracy")


def load_models(config: ml_collections.ConfigDict) -> models.ModelBundle:
    """The converted checkpoints under `config.models` (`unet/` and `vae/` required, the
    text encoder and tokenizer if present), or a random tiny MV-VDM + VAE."""
    if not config.models:
        return models.ModelBundle(
            unet=UNet(_tiny_unet_config(), rngs=nnx.Rngs(config.seed)),
            vae=AutoencoderKL(VAEConfig.tiny(), rngs=nnx.Rngs(config.seed + 1)))
    return models.load_bundle(config.models, require=("unet", "vae"))


def _tiny_unet_config() -> UNetConfig:
    return UNetConfig.from_config_dict(get_config("unet", "tiny_mvvdm"))


def load_clip(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The probed clip (views 0, V/4, V/2, 3V/4 from frame 0) with its reference tracks."""
    data = MVVideoConfig(root=config.data, size=config.size, num_views=4,
                         num_frames=config.frames, frame_stride=config.stride, max_start=0,
                         tracks_dir=config.tracks, missing_tracks="error")
    items, refused = read_index(config.data, num_views=4)
    for message in refused:
        logging.warning("%s", message)
    if config.item >= len(items):
        raise ValueError(f"config.item={config.item}: {config.data} has {len(items)} items")
    item = items[config.item]
    views = np.arange(4) * (item.num_views // 4)
    clip = Clip(views=views, frames=np.arange(config.frames) * config.stride)
    example = load_example(item, clip, data)
    example["prompt"] = item.prompt
    example["name"] = f"{item.uid}/{item.anim}"
    return example


def block_features(probe_models: models.ModelBundle, example: dict[str, Any],
                   timestep: int, seed: int) -> dict[str, jax.Array]:
    """{block name: features [V, F, h, w, C]} of one noised denoiser pass over the clip
    (`pipeline.unet_features`), every block in U-Net order."""
    unet = probe_models.unet
    text = probe_models.text_states([example["prompt"]])
    cameras = jnp.asarray(example["cameras"]) if unet.config.use_camera_embedding else None
    names = unet.feature_names()
    features = unet_features(unet, probe_models.vae, jnp.asarray(example["frames"]), text,
                             cameras=cameras, timestep=timestep, seed=seed, capture=names)
    return {name: features[name] for name in names}          # U-Net order


def score_blocks(features: dict[str, jax.Array], example: dict[str, Any],
                 size: int) -> list[dict[str, Any]]:
    """TAP-Vid metrics (percent) of feature tracking in every block, in U-Net order."""
    queries = jnp.asarray(example["queries"])                      # [V, N, 2]
    truth, visible = example["tracks"], example["visibility"]
    valid = example["query_valid"]
    rows = []
    for name, value in features.items():
        h, w = value.shape[2:4]
        match = (min(size, 4 * h), min(size, 4 * w))
        tracks = np.asarray(_track(value.astype(jnp.float32), queries, (size, size), match))
        metrics = tapvid_metrics(np.zeros(valid.shape, np.int64), truth, visible, tracks,
                                 np.ones(visible.shape, bool), (size, size),
                                 query_valid=valid)
        rows.append({"block": name, "feature_size": [int(h), int(w)],
                     "channels": int(value.shape[-1]),
                     **{k: float(np.nanmean(metrics[k]) * 100) for k in METRICS}})
    return rows


_track = jax.jit(track_by_features, static_argnums=(2, 3))


def heatmap_image(features: jax.Array, example: dict[str, Any], size: int,
                  view: int = 0) -> Image.Image:
    """Frames of one view (top) and the cosine-similarity maps of its first valid query's
    frame-1 descriptor in each frame (bottom), the reference track marked in red."""
    valid = np.flatnonzero(example["query_valid"][view])
    if valid.size == 0:
        raise ValueError(f"{example['name']}: view {view} has no valid query point")
    point = int(valid[0])
    fine = resize_features(features[view:view + 1].astype(jnp.float32), (size, size))
    query = jnp.asarray(example["queries"][view:view + 1, point:point + 1])
    descriptor = sample_descriptors(fine[None, :, :1], query[None, :, None], (size, size))
    maps = np.asarray(similarity_maps(fine, descriptor[0, :, 0]))[0, :, 0]     # [F, S, S]
    heat = ((maps + 1) / 2 * 255).clip(0, 255).astype(np.uint8)
    frames = ((np.asarray(example["frames"][view]) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    heat_rgb = np.stack([heat, heat, heat], axis=-1)
    for k, (x, y) in enumerate(example["tracks"][view, :, point]):
        row, col = int(np.clip(y, 0, size - 1)), int(np.clip(x, 0, size - 1))
        for image in (frames[k], heat_rgb[k]):
            image[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = (255, 0, 0)
    strip = lambda images: np.concatenate(list(images), axis=1)
    return Image.fromarray(np.concatenate([strip(frames), strip(heat_rgb)], axis=0))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (f"| {'block':40s} | size  |    C | delta_avg |    AJ | occ acc |\n"
              f"|{'-' * 42}|-------|------|-----------|-------|---------|")
    body = [f"| {r['block']:40s} | {r['feature_size'][0]:2d}x{r['feature_size'][1]:<2d} | "
            f"{r['channels']:4d} | {r['average_pts_within_thresh']:9.1f} | "
            f"{r['average_jaccard']:5.1f} | {r['occlusion_accuracy']:7.1f} |" for r in rows]
    return "\n".join([header] + body)


def run_probe(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """The whole probe (see the module docstring); returns the table rows."""
    os.makedirs(config.out, exist_ok=True)
    if not config.data:
        config.data = _demo_data(config)
    example = load_clip(config)
    probe_models = load_models(config)
    features = block_features(probe_models, example, config.timestep, config.seed)
    if config.tap not in features:
        raise ValueError(f"config.tap={config.tap!r} is not a block of this U-Net; known: "
                         f"{sorted(features)}")
    rows = score_blocks(features, example, config.size)
    print(f"Tracking probe on {example['name']} ({len(example['frames'])} views x "
          f"{config.frames} frames, t={config.timestep}); TAP-Vid metrics in percent:")
    print(format_table(rows))
    best = max(rows, key=lambda r: r["average_pts_within_thresh"])["block"]
    for name in dict.fromkeys([config.tap, best]):
        with atomic_write(os.path.join(config.out, f"heatmap_{name}.png")) as file:
            heatmap_image(features[name], example, config.size).save(file, format="PNG")
    with atomic_write(os.path.join(config.out, "probe.json")) as file:
        file.write(json.dumps({"clip": example["name"], "timestep": config.timestep,
                               "best": best, "blocks": rows}, indent=2).encode())
    logging.info("best block %s; wrote %s", best, config.out)
    return rows


def _demo_data(config: ml_collections.ConfigDict) -> str:
    """A one-object synthetic set in out/data (made once), tracked exactly."""
    root = os.path.join(config.out, "data")
    spec = synthetic.DatasetSpec(views=4, frames=(config.frames - 1) * config.stride + 1,
                                 size=config.size, seed=config.seed)
    logging.info(synthetic.generate_dataset(root, 1, spec))
    config.tracks = "exact_tracks"
    return root


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    run_probe(flags.FLAGS.config)


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", config_path("probe"),
                                    "ml_collections config file (configs/probe.py)")
    app.run(main)
