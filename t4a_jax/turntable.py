"""Turntable video of a static Gaussian asset: the main job until training exists.

    python -m t4a_jax.turntable --config=configs/turntable.py \
        [--config.asset=model.ply] [--config.out=out/turntable.mp4]

Loads the asset (`load_asset`: the built-in object, a 3DGS `.ply` or a mesh), renders
`config.frames` cameras on an Animate3D orbit (`render_turntable`, frames
[F, size, size, 3] float in [0, 1]) and writes them with `write_video`. The config is
`configs/turntable.py`; its keys are documented there.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from t4a_jax.render import orbit_cameras, rasterize
from t4a_jax.render.builtin import builtin_object
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.mesh import gaussians_from_mesh
from t4a_jax.render.ply import load_ply
from t4a_jax.video import VIDEO_EXTENSIONS, write_video

MESH_EXTENSIONS = (".obj", ".glb", ".gltf")  # and .ply files with faces


def _ply_elements(path: str) -> dict[str, tuple[int, list[str]]]:
    """{element name: (count, property names)} from the header of the PLY file `path`."""
    elements: dict[str, tuple[int, list[str]]] = {}
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file (no 'ply' magic line)")
        current: list[str] = []
        for raw in f:
            words = raw.decode("ascii", errors="replace").split()
            if words == ["end_header"]:
                return elements
            if len(words) >= 3 and words[0] == "element":
                current = []
                try:
                    elements[words[1]] = (int(words[2]), current)
                except ValueError as e:
                    raise ValueError(f"{path}: bad PLY header line {raw!r}") from e
            elif len(words) >= 3 and words[0] == "property":
                current.append(words[-1])
    raise ValueError(f"{path}: PLY header has no end_header")


def load_asset(path: str, *, mesh_samples: int = 20000, seed: int = 0) -> Gaussians:
    """Gaussians of an asset: '' is `builtin_object(seed)`; a `.ply` whose vertices have
    `f_dc_0` is a 3DGS file (`load_ply`); a `.ply` with faces, `.obj`, `.glb` or `.gltf`
    is a mesh (`gaussians_from_mesh` with `mesh_samples` samples and `seed`).

    Raises:
      ValueError naming the file when it is missing, has another extension, or is a
      `.ply` with neither 3DGS properties nor faces (e.g. a point cloud).
    """
    if not path:
        return builtin_object(seed)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".ply":
        elements = _ply_elements(path)
        if "f_dc_0" in elements.get("vertex", (0, []))[1]:
            return load_ply(path)
        if elements.get("face", (0, []))[0] > 0:
            return gaussians_from_mesh(path, num_samples=mesh_samples, seed=seed)
        raise ValueError(f"{path}: a .ply with neither 3DGS vertex properties (f_dc_0) "
                         f"nor faces; elements: {sorted(elements)}")
    if ext in MESH_EXTENSIONS:
        return gaussians_from_mesh(path, num_samples=mesh_samples, seed=seed)
    raise ValueError(f"{path}: unknown asset type {ext!r} (expected a 3DGS .ply or a "
                     f"mesh: .ply with faces, {', '.join(MESH_EXTENSIONS)})")


def _check_config(config: ml_collections.ConfigDict) -> None:
    for key in ("frames", "size", "cameras_per_step", "tile_capacity"):
        value = config[key]
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"config.{key} must be a positive int, got {value!r}")
    if len(config.background) != 3:
        raise ValueError(f"config.background must be 3 values (RGB), "
                         f"got {config.background!r}")


def render_turntable(gaussians: Gaussians, config: ml_collections.ConfigDict) -> np.ndarray:
    """Frames [F, size, size, 3] float32 in [0, 1] of `gaussians` on the turntable orbit.

    Camera i sits at elevation `config.elevation` and azimuth
    `config.azimuth_start + 360 * i / F` (F = `config.frames`) at `config.distance`
    with vertical field of view `config.fovy` (`render.orbit_cameras`), in front of
    `config.background`. One compiled function renders `config.cameras_per_step`
    cameras per call; the last chunk is padded with copies of the last camera.

    Raises:
      ValueError when a config value is invalid, or when Gaussians overflowed a tile in
      any frame; the message gives the `config.tile_capacity` that would suffice.
    """
    _check_config(config)
    num_frames, size, per_step = config.frames, config.size, config.cameras_per_step
    azimuths = config.azimuth_start + 360.0 * np.arange(num_frames) / num_frames
    viewmats, ks, _ = orbit_cameras(config.elevation, azimuths, distance=config.distance,
                                    fovy_degrees=config.fovy, width=size, height=size)
    pad = ((0, -num_frames % per_step), (0, 0), (0, 0))
    viewmats = np.pad(np.asarray(viewmats), pad, mode="edge")
    ks = np.pad(np.asarray(ks), pad, mode="edge")
    background = jnp.asarray(config.background, jnp.float32)

    def render_step(gaussians: Gaussians, viewmats: jax.Array, ks: jax.Array,
                    background: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        colors, _, meta = rasterize(
            **gaussians.activated(), viewmats=viewmats, Ks=ks, width=size, height=size,
            sh_degree=gaussians.sh_degree, backgrounds=background,
            tile_capacity=config.tile_capacity)
        return jnp.clip(colors, 0.0, 1.0), meta["overflow"], meta["max_tile_count"]

    start = time.perf_counter()
    step = jax.jit(render_step).lower(gaussians, viewmats[:per_step], ks[:per_step],
                                      background).compile()
    logging.info("compiled the renderer for %d cameras of %dx%d in %.1f s", per_step,
                 size, size, time.perf_counter() - start)

    frames = np.empty((num_frames, size, size, 3), np.float32)
    overflow = np.empty(num_frames, np.int64)
    max_tile_count = np.empty(num_frames, np.int64)
    start = time.perf_counter()
    with tqdm(total=num_frames, unit="frame", desc="turntable") as progress:
        for first in range(0, num_frames, per_step):
            chunk = slice(first, first + per_step)
            colors, chunk_overflow, chunk_count = jax.device_get(
                step(gaussians, viewmats[chunk], ks[chunk], background))
            real = min(per_step, num_frames - first)
            frames[first:first + real] = colors[:real]
            overflow[first:first + real] = chunk_overflow[:real]
            max_tile_count[first:first + real] = chunk_count[:real]
            progress.update(real)
    seconds = time.perf_counter() - start
    logging.info("rendered %d frames in %.2f s (%.1f frames/s)", num_frames, seconds,
                 num_frames / seconds)

    bad = np.flatnonzero(overflow)
    if bad.size:
        raise ValueError(
            f"config.tile_capacity={config.tile_capacity} is too small: Gaussians "
            f"overflowed a tile in {bad.size} of {num_frames} frames (first: frame "
            f"{bad[0]}); rerun with --config.tile_capacity={int(max_tile_count.max())}")
    return frames


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = flags.FLAGS.config
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


if __name__ == "__main__":
    # Flags are defined here, not at import, so that tests and other entry points can
    # import this module beside others that define --config too.
    config_flags.DEFINE_config_file("config", None, "ml_collections config file, e.g. "
                                    "configs/turntable.py or configs/turntable.py:tiny")
    flags.mark_flags_as_required(["config"])
    app.run(main)
