"""Stage One sampling of a static asset, as `python -m t4a_jax.sample` and the animate
job run it: settings resolved against the model bundle, the condition views rendered,
the multi-view video sampled.

    settings = resolve(config, bundle)      # unset views/frames/size/steps/guidance filled
    result = sample_asset(bundle, gaussians, settings)
    result.video                            # [V, F, S, S, 3] in [0, 1], frame 0 the condition

`config` is an ml_collections config with the keys of `configs/sample.py` (prompt,
views, frames, size, steps, guidance, seed, elevation, azimuth, tile_capacity,
mesh_samples, defaults); errors name `config.<key>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Iterator, Sequence

import ml_collections
import numpy as np
from absl import logging

from t4a_jax.models import ModelBundle
from t4a_jax.pipeline import condition_views, sample_multiview_video
from t4a_jax.render import camera_vector
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.views import ViewRender, ViewSet

# The config keys that default to the bundle's `SamplingDefaults` field of this name.
FROM_BUNDLE = {"views": "num_views", "frames": "num_frames", "size": "image_size",
               "steps": "num_steps", "guidance": "guidance_scale"}


def resolve(config: ml_collections.ConfigDict, bundle: ModelBundle) -> ml_collections.ConfigDict:
    """A copy of `config` with every unset key of `FROM_BUNDLE` filled from the bundle's
    `sampling` defaults, else from `config.defaults`; raises ValueError naming the key of
    a bad value."""
    resolved = ml_collections.ConfigDict(config.to_dict())
    for key, field in FROM_BUNDLE.items():
        if resolved[key] is None:
            resolved[key] = (getattr(bundle.sampling, field) if bundle.sampling is not None
                             else config.defaults[key])
    for key in ("views", "frames", "size", "steps", "tile_capacity"):
        if not isinstance(resolved[key], int) or resolved[key] <= 0:
            raise ValueError(f"config.{key}={resolved[key]!r} must be a positive int")
    if resolved.frames < 2:
        raise ValueError(f"config.frames={resolved.frames} must be >= 2 (frame 0 is the "
                         f"condition)")
    return resolved


def check_size(size: int, bundle: ModelBundle) -> None:
    """Raise ValueError naming `size` unless latents of the VAE fit the U-Net: a multiple
    of the VAE's times the U-Net's downsampling factor."""
    vae_factor = bundle.vae.config.downsample_factor
    unet_factor = bundle.unet.config.downsample_factor
    if size % (vae_factor * unet_factor):
        raise ValueError(f"config.size={size} must be a multiple of {vae_factor * unet_factor} "
                         f"(VAE downsampling {vae_factor} x U-Net downsampling "
                         f"{unet_factor})")


def tile_views(video: np.ndarray) -> np.ndarray:
    """[V, F, H, W, 3] -> [F, H, V * W, 3]: the views side by side, view 0 leftmost."""
    v, f, h, w, c = video.shape
    return video.transpose(1, 2, 0, 3, 4).reshape(f, h, v * w, c)


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    logging.info("%s in %.1f s", what, time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class AssetVideo:
    """A sampled multi-view video: `video` [V, F, S, S, 3] in [0, 1] (frame 0 of each view is
    its condition render), the condition `views` and their static `render`."""

    video: np.ndarray
    views: ViewSet
    render: ViewRender


def render_conditions(gaussians: Gaussians, config: ml_collections.ConfigDict
                      ) -> tuple[ViewSet, ViewRender]:
    """The `config.views` condition views of `gaussians` on the Animate3D orbit and their
    static renders (`pipeline.condition_views`)."""
    with timed(f"rendered {config.views} condition views of {config.size}x{config.size}"):
        return condition_views(gaussians, num_views=config.views, elevation=config.elevation,
                               azimuth_start=config.azimuth, size=config.size,
                               tile_capacity=config.tile_capacity)


def sample_videos(bundle: ModelBundle, conditions: Sequence[tuple[ViewSet, ViewRender, str]],
                  config: ml_collections.ConfigDict, *, progress: bool = True) -> np.ndarray:
    """[B, V, F, S, S, 3] in [0, 1]: `config.frames` frames per condition view (frame 0
    the condition render) of B objects sampled together, each (views, render, prompt),
    DDIM with guidance (`config` resolved; its `prompt` is not used)."""
    check_size(config.size, bundle)
    unet_config = bundle.unet.config
    logging.info("sampling %d object(s): %d views x %d frames at %d px, %d DDIM steps, "
                 "guidance %.2f", len(conditions), config.views, config.frames,
                 config.size, config.steps, config.guidance)
    images = np.stack([np.asarray(render.colors) for _, render, _ in conditions])
    cameras = (np.stack([np.asarray(camera_vector(views.c2w)) for views, _, _ in conditions])
               if unet_config.use_camera_embedding else None)
    with timed("sampled (compilation included)"):
        return np.asarray(sample_multiview_video(
            bundle.unet, bundle.vae, bundle.text_encoder, bundle.tokenizer, images, cameras,
            [prompt for _, _, prompt in conditions],
            image_encoder=bundle.image_encoder if unet_config.use_ip_adapter else None,
            num_frames=config.frames, num_steps=config.steps,
            guidance_scale=config.guidance, seed=config.seed,
            init_strength=config.init_strength, progress=progress))


def sample_video(bundle: ModelBundle, views: ViewSet, render: ViewRender,
                 config: ml_collections.ConfigDict, *, progress: bool = True) -> np.ndarray:
    """[V, F, S, S, 3] in [0, 1]: `sample_videos` of one object with `config.prompt`."""
    return sample_videos(bundle, [(views, render, config.prompt)], config,
                         progress=progress)[0]


def sample_asset(bundle: ModelBundle, gaussians: Gaussians,
                 config: ml_collections.ConfigDict, *, progress: bool = True) -> AssetVideo:
    """`render_conditions` then `sample_video` (`config` resolved by `resolve`)."""
    check_size(config.size, bundle)
    views, render = render_conditions(gaussians, config)
    return AssetVideo(sample_video(bundle, views, render, config, progress=progress),
                      views, render)
