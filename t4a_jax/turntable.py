"""Turntable video of a static Gaussian asset.

    python -m t4a_jax.turntable --config=configs/turntable.py \
        [--config.asset=model.ply] [--config.out=out/turntable.mp4]

`run(config)` loads the asset (`render.assets.load_asset`: the built-in object, a 3DGS
`.ply` or a mesh), renders `config.frames` cameras on an Animate3D orbit
(`render_turntable`, frames [F, size, size, 3] float in [0, 1], through the one view
renderer `render.views.ViewRenderer`) and writes them with `write_video`. The config is
`configs/turntable.py`; its keys are documented there.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from t4a_jax.render.assets import load_asset
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.views import OVERFLOW_MODES, TileOverflowError, ViewRenderer, ring_views
from t4a_jax.video import VIDEO_EXTENSIONS, write_video


def _check_config(config: ml_collections.ConfigDict) -> None:
    for key in ("frames", "size", "cameras_per_step", "tile_capacity"):
        value = config[key]
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"config.{key} must be a positive int, got {value!r}")
    if config.overflow not in OVERFLOW_MODES:
        raise ValueError(f"config.overflow={config.overflow!r}, expected one of "
                         f"{OVERFLOW_MODES}")
    if len(config.background) != 3:
        raise ValueError(f"config.background must be 3 values (RGB), "
                         f"got {config.background!r}")


def render_turntable(gaussians: Gaussians, config: ml_collections.ConfigDict) -> np.ndarray:
    """Frames [F, size, size, 3] float32 in [0, 1] of `gaussians` on the turntable orbit.

    Camera i sits at elevation `config.elevation` and azimuth
    `config.azimuth_start + 360 * i / F` (F = `config.frames`) at `config.distance`
    with vertical field of view `config.fovy` (`render.views.ring_views`), in front of
    `config.background`. One compiled function renders `config.cameras_per_step`
    cameras per call (the last chunk padded). A tile overflow makes the renderer grow
    its capacity from `config.tile_capacity` (`config.overflow="grow"`) or raises.

    Raises:
      ValueError when a config value is invalid, or, with `config.overflow="raise"`,
      when Gaussians overflowed a tile in any frame; the message gives the
      `config.tile_capacity` that would suffice.
    """
    _check_config(config)
    views = ring_views(config.frames, elevation=config.elevation, size=config.size,
                       azimuth_start=config.azimuth_start, distance=config.distance,
                       fovy=config.fovy)
    renderer = ViewRenderer(config.size, config.size, background=config.background,
                            tile_capacity=config.tile_capacity, overflow=config.overflow,
                            cameras_per_step=config.cameras_per_step)
    start = time.perf_counter()
    try:
        frames = renderer(gaussians, views.viewmats, views.Ks, progress="turntable").colors
    except TileOverflowError as e:
        raise ValueError(
            f"config.tile_capacity={e.capacity} is too small: Gaussians overflowed a tile "
            f"in {len(e.views)} of {config.frames} frames (first: frame {e.views[0]}); "
            f"rerun with --config.tile_capacity={e.needed}") from e
    seconds = time.perf_counter() - start
    logging.info("rendered %d frames in %.2f s (%.1f frames/s, compilation included)",
                 config.frames, seconds, config.frames / seconds)
    return frames


def run(config: ml_collections.ConfigDict) -> str:
    """Load the asset, render the turntable and write `config.out`; returns its path."""
    ext = os.path.splitext(config.out)[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(f"config.out={config.out!r}: the extension must be one of "
                         f"{', '.join(VIDEO_EXTENSIONS)}")
    gaussians = load_asset(config.asset, mesh_samples=config.mesh_samples,
                           seed=config.seed)
    logging.info("asset %s: %d Gaussians, SH degree %d",
                 config.asset or "(built-in object)", gaussians.num_gaussians,
                 gaussians.sh_degree)
    frames = render_turntable(gaussians, config)
    directory = os.path.dirname(config.out)
    if directory:
        os.makedirs(directory, exist_ok=True)
    write_video(config.out, frames, fps=config.fps)
    logging.info("wrote %s (%d frames of %dx%d at %s fps)", config.out, len(frames),
                 config.size, config.size, config.fps)
    return config.out


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    run(flags.FLAGS.config)


if __name__ == "__main__":
    # Flags are defined here, not at import, so that tests and other entry points can
    # import this module beside others that define --config too.
    config_flags.DEFINE_config_file("config", None, "ml_collections config file, e.g. "
                                    "configs/turntable.py or configs/turntable.py:tiny")
    flags.mark_flags_as_required(["config"])
    app.run(main)
