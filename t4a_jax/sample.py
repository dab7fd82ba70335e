"""`python -m t4a_jax.sample`: Stage One inference, a static object + a prompt -> a
multi-view video.

    python -m t4a_jax.sample --config=configs/sample.py --config.checkpoint=ckpt/mvvdm \
        --config.object=model.ply --config.prompt="a dog is running" \
        [--config.out=out/sample.mp4 --config.per_view=True --config.size=256 ...]

`run(config)` loads the model directory (`t4a_jax.models.load_bundle`: U-Net, VAE, text
encoder, tokenizer, and the image encoder of an IP-Adapter U-Net) and the object
(`render.assets.load_asset`: a 3DGS `.ply`, a mesh, or `builtin` for the built-in
object), renders its V condition views on the Animate3D orbit
(`pipeline.condition_views`: azimuths `azimuth + 360 k / V`), samples F frames
per view (`pipeline.sample_multiview_video`, frame 0 the condition render, a progress
bar over the denoising steps) and writes one video [F, S, V*S, 3] with the views side by
side, left to right in azimuth order; `per_view` adds one video per view,
`<stem>_view<k><ext>` beside `out`. Videos are `.mp4` or `.gif`, each written
atomically. `clip` also writes a clip folder for Stage Two
(`reconstruction.clips.write_clip`: the per-view videos, the cameras, the condition
renders' masks, the prompt and the static asset), which
`python -m t4a_jax.reconstruct --config.clip=DIR` takes. Views, frames, size, steps and
guidance default to what the bundle was trained with (`configs/sample.py` says how). The config keys are documented in
`configs/sample.py`; on the command line they are `--config.<key>=<value>`.
"""

from __future__ import annotations

import os
from typing import Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from t4a_jax.config_files import config_path
from t4a_jax.models import load_bundle
from t4a_jax.reconstruction.clips import write_clip
from t4a_jax.render.assets import load_asset
from t4a_jax.sampling import resolve, sample_asset, tile_views, timed
from t4a_jax.video import VIDEO_EXTENSIONS, write_video

BUILTIN = "builtin"  # config.object value for `render.builtin.builtin_object`


def view_paths(out: str, num_views: int) -> list[str]:
    """The `--per_view` files: `<stem>_view<k><ext>` beside `out`."""
    stem, ext = os.path.splitext(out)
    return [f"{stem}_view{k}{ext}" for k in range(num_views)]


def run(config: ml_collections.ConfigDict) -> list[str]:
    """Load, render, sample and write (see the module docstring); returns the paths
    written. Raises ValueError / OSError naming the bad config key, file or directory."""
    if os.path.splitext(config.out)[1].lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"config.out={config.out}: the extension must be one of "
                         f"{', '.join(VIDEO_EXTENSIONS)}")
    for key in ("checkpoint", "prompt"):
        if not config[key]:
            raise ValueError(f"config.{key} is required")
    with timed(f"loaded the object {config.object}"):
        gaussians = load_asset("" if config.object == BUILTIN else config.object,
                               mesh_samples=config.mesh_samples, seed=config.asset_seed)
    with timed(f"loaded the models from {config.checkpoint}"):
        bundle = load_bundle(config.checkpoint)
    config = resolve(config, bundle)
    result = sample_asset(bundle, gaussians, config)
    video, views, render = result.video, result.views, result.render
    outputs = {config.out: tile_views(video)}                      # video [V, F, S, S, 3]
    if config.per_view:
        outputs.update(zip(view_paths(config.out, config.views), video))
    directory = os.path.dirname(config.out)
    if directory:
        os.makedirs(directory, exist_ok=True)
    for path, frames in outputs.items():
        write_video(path, frames, fps=config.fps)
        logging.info("wrote %s: %d frames of %dx%d (HxW)", path, len(frames),
                     frames.shape[1], frames.shape[2])
    written = list(outputs)
    if config.clip:
        written.append(write_clip(config.clip, video, views, render.alphas, gaussians,
                                  prompt=config.prompt, fps=config.fps,
                                  elevation=config.elevation, azimuth_start=config.azimuth))
        logging.info("wrote the clip folder %s (python -m t4a_jax.reconstruct "
                     "--config.clip=%s)", config.clip, config.clip)
    return written


def main(argv: Sequence[str]) -> None:
    """The command line (see the module docstring): `error: ...` and exit status 1 for a
    bad config key, file or directory."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        paths = run(flags.FLAGS.config)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print("\n".join(paths))


if __name__ == "__main__":
    # Flags are defined here, not at import, so that programs can import this module.
    config_flags.DEFINE_config_file("config", config_path("sample"),
                                    "ml_collections config file (configs/sample.py)")
    app.run(main)
