"""Synthetic MV-Video data: procedural animated creatures with exact point tracks.

    python -m t4a_jax.data.synthetic --config=configs/synthetic.py --config.out=DIR \
        [--config.objects=4 --config.views=16 --config.frames=48 --config.size=256 ...]

(the keys, their defaults and the `tiny` variant are documented in `configs/synthetic.py`;
a program calls `run(config)`, or `generate_dataset(out, num_objects, DatasetSpec(...))`)
writes the MV-Video layout plus what the real set lacks (V views, F frames, S pixels;
uids `synth_0000`, ..., animations `anim_0`, ...):

    DIR/uid_info_dict.json                 {uid: {anim: {"00": {"angle": {"elv": deg,
                                           "azi_start": deg}, "text_prompt": str}}}}
    DIR/videos/<uid>/<anim>/view_{i}.mp4   [F, S, S, 3] RGB at 24 fps on grey 0.498
    DIR/masks/<uid>/<anim>/view_{i}.npz    `mask`: bool [F, S, S], rendered alpha > 0.5
    DIR/cameras/<uid>/<anim>.npz           the V cameras (`data.camera_files`: `c2w`
                                           [V, 4, 4] Animate3D convention, `K` [3, 3] in
                                           pixels at S x S, `views`, `elevation`,
                                           `azimuth_start`, `distance`, `fovy`)
    DIR/static/<uid>.ply                   the creature at rest, which is frame 0 of every
                                           animation (3DGS layout, `render.ply.save_ply`)
    DIR/exact_tracks/<uid>/<anim>.npz      a `TrackSet` (t4a_jax.data.tracks), tracker
                                           'exact', every view and frame, 15 x 15 grid
                                           queries on frame 0, valid inside the mask
    DIR/synthetic_config.json              the generation parameters (a rerun must match)

The V views are `render.views.ring_views`: view i at azimuth `azi_start + 360 i / V` and
elevation `elv` on an orbit of radius 3.0 looking at the origin, vertical field of view
40 degrees; frames are rendered by `render.views.ViewRenderer` (`make_renderer`). Each
object is `procedural.make_creature(seed=[S, object index])` and each animation
`procedural.make_animation(seed=[S, object index, animation index])`, so a dataset's
first objects do not depend on how many follow.

Exact tracks. For every valid query pixel of frame 0 the Gaussian with the largest
compositing weight there (the one whose colour the pixel mostly shows,
`render.visibility.dominant_gaussians`) is found; the tracked point is the point of the
pixel's ray at that Gaussian's depth, attached to the Gaussian. It moves with the
Gaussian's transform (`procedural.gaussian_transforms`, the function that poses the
rendered Gaussians) and is projected into the view at every frame. It is visible at a
frame when it is on screen, on the mask (alpha > 0.5 at its pixel), not occluded (the
Gaussians more than `OCCLUSION_MARGIN` in front of it let at least half of the light
through at its pixel: `render.visibility.front_transmittance`) and its surface normal
does not face away from the camera (cosine >= `MIN_FACING`, which catches the far side
of thin parts). On the defaults about 99 % of valid queries are visible at frame 0 (the
rest sit on silhouettes) and 90 % over the clip.

Every file is written atomically. An item (uid, animation) whose files all exist is
skipped on a rerun unless `overwrite`; the track file is written last. At the defaults
one object takes about 40 s on two CPU cores (rendering 48 frames of 16 views at
256 x 256, about 0.7 s a frame, dominates), 4 objects about 3 minutes; a tiny set
(4 views, 6 frames, 128 pixels) takes a few seconds after a few seconds' compile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import NamedTuple, Sequence

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from t4a_jax.atomic import atomic_write
from t4a_jax.config_files import config_path
from t4a_jax.data import procedural
from t4a_jax.data.camera_files import save_cameras
from t4a_jax.data.tracks import TrackSet, grid_queries, queries_in_mask, save_tracks
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.ply import save_ply
from t4a_jax.render.views import ViewRenderer, ViewSet, ring_views
from t4a_jax.render.visibility import (dominant_gaussians, facing, front_transmittance,
                                       project_points, unproject)
from t4a_jax.video import write_video

FPS = 24
RENDER_BATCH = 64          # rasterizer batch size: ~15 % faster than 32 here on a CPU
MASK_THRESHOLD = 0.5       # rendered alpha above which a pixel is on the object
OCCLUSION_MARGIN = 0.04    # world units: Gaussians this far in front of a point occlude it
MIN_TRANSMITTANCE = 0.5    # a point is seen when at least this much of it shows
MIN_FACING = -0.2          # cosine between the point's normal and the ray to the camera
ELEVATION_RANGE = (0.0, 30.0)
CONFIG_FILE = "synthetic_config.json"
INFO_FILE = "uid_info_dict.json"
# The smallest value of each DatasetSpec field (and `run`'s config keys).
MINIMUM = {"views": 1, "frames": 1, "size": 16, "num_gaussians": 1024}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What every item of a dataset shares; stored in `CONFIG_FILE`."""

    views: int = 16
    frames: int = 48
    size: int = 256
    seed: int = 0
    num_gaussians: int = 4096

    def __post_init__(self) -> None:
        for name, low in MINIMUM.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")


class Item(NamedTuple):
    """One animation of one object, as planned from the seed."""

    uid: str
    anim: str
    creature_seed: tuple[int, ...]
    animation_seed: tuple[int, ...]
    elevation: float
    azimuth_start: float


class Attachment(NamedTuple):
    """Query points attached to Gaussians: gaussian [V, N] int (index into the
    creature's Gaussians, 0 where the query is not valid), point [V, N, 3] world
    position at frame 0."""

    gaussian: np.ndarray
    point: np.ndarray


def plan(spec: DatasetSpec, num_objects: int, num_animations: int) -> list[Item]:
    """The dataset's items, object-major; cheap (no geometry is built)."""
    items = []
    for i in range(num_objects):
        for k in range(num_animations):
            rng = np.random.default_rng([spec.seed, i, k, 1])
            items.append(Item(f"synth_{i:04d}", f"anim_{k}", (spec.seed, i), (spec.seed, i, k),
                              float(np.round(rng.uniform(*ELEVATION_RANGE), 2)),
                              float(np.round(rng.uniform(0.0, 360.0), 2))))
    return items


def item_views(item: Item, spec: DatasetSpec) -> ViewSet:
    """The item's `spec.views` orbit cameras at `spec.size` pixels."""
    return ring_views(spec.views, elevation=item.elevation, size=spec.size,
                      azimuth_start=item.azimuth_start)


def make_renderer(size: int) -> ViewRenderer:
    """The renderer of every frame: `size` x `size` on the grey background, overflowing
    images re-rendered at a raised tile capacity (kept for the following frames). It
    starts at about what these creatures need: 1024 at 256 px, scaling with 1 / size,
    as smaller images put more Gaussians on a tile."""
    capacity = 1024 * 256 // size
    return ViewRenderer(size, size, overflow="grow", batch_size=RENDER_BATCH,
                        tile_capacity=-(-capacity // RENDER_BATCH) * RENDER_BATCH)


# ----------------------------------------------------------------------------- tracks


def attach_queries(gaussians: Gaussians, views: ViewSet, size: int, queries: np.ndarray,
                   valid: np.ndarray) -> Attachment:
    """Attach each valid query [V, N, 2] of frame 0 (rendered from `gaussians`) to the
    Gaussian its pixel mostly shows, at that Gaussian's depth on the pixel's ray."""
    index, depth = dominant_gaussians(gaussians, views.viewmats, views.Ks, size, size,
                                      queries)
    missing = valid & (index < 0)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} queries inside the mask have no Gaussian "
                         f"reaching their pixel; the mask and the Gaussians disagree")
    valid_index = np.where(valid, index, 0)
    return Attachment(valid_index, unproject(queries, np.where(valid, depth, 1.0),
                                             views.viewmats, views.Ks))


def track_points(creature: procedural.Creature, transforms: procedural.Similarity,
                 attachment: Attachment) -> tuple[np.ndarray, np.ndarray]:
    """World positions and unit normals [F, V, N, 3] of attached points at the F times of
    `transforms` (rest-to-time transforms, fields [F, N_gaussians]; the first time is the
    frame the points were attached at). A point keeps its place relative to its Gaussian:
    x_t = W(t) W(0)^-1 x_0, and its normal is the Gaussian's, n_t = R(t) n_rest."""
    ride = procedural.Similarity(*(field[:, attachment.gaussian]
                                   for field in transforms))        # fields [F, V, N]
    first = procedural.Similarity(*(field[:1] for field in ride))
    points = ride.apply(first.inverse_apply(attachment.point))
    normals = ride.rotate(creature.normals[attachment.gaussian].astype(np.float64))
    return points, normals


def visibility(xy: np.ndarray, cosine: np.ndarray, transmittance: np.ndarray,
               alphas: np.ndarray, *, min_facing: float = MIN_FACING) -> np.ndarray:
    """[V, N] bool for one frame: points at pixels `xy` [V, N, 2] are visible when on
    screen, on the object (rendered `alphas` [V, H, W] > MASK_THRESHOLD at the pixel
    containing them), not occluded (`transmittance` [V, N] of what lies in front
    >= MIN_TRANSMITTANCE) and not facing away (normal cosine [V, N] >= `min_facing`;
    -1 turns this test off)."""
    _, height, width = alphas.shape
    on_screen = ((xy[..., 0] >= 0) & (xy[..., 0] < width)
                 & (xy[..., 1] >= 0) & (xy[..., 1] < height))
    cols = np.clip(np.floor(xy[..., 0]), 0, width - 1).astype(int)
    rows = np.clip(np.floor(xy[..., 1]), 0, height - 1).astype(int)
    alpha = alphas[np.arange(len(xy))[:, None], rows, cols]
    return (on_screen & (alpha > MASK_THRESHOLD) & (transmittance >= MIN_TRANSMITTANCE)
            & (cosine >= min_facing))


# ----------------------------------------------------------------------------- items


def item_paths(out: str, item: Item, views: int) -> dict[str, list[str]]:
    """Every file of an item, by kind; 'tracks' is written last."""
    def join(*parts: str) -> str:
        return os.path.join(out, *parts)
    return {
        "videos": [join("videos", item.uid, item.anim, f"view_{i}.mp4") for i in range(views)],
        "masks": [join("masks", item.uid, item.anim, f"view_{i}.npz") for i in range(views)],
        "cameras": [join("cameras", item.uid, f"{item.anim}.npz")],
        "static": [join("static", f"{item.uid}.ply")],
        "tracks": [join("exact_tracks", item.uid, f"{item.anim}.npz")],
    }


def generate_item(out: str, item: Item, spec: DatasetSpec, renderer: ViewRenderer) -> None:
    """Render one item and write all its files (see the module docstring)."""
    creature = procedural.make_creature(item.creature_seed, spec.num_gaussians)
    animation = procedural.make_animation(creature, item.animation_seed)
    views = item_views(item, spec)
    transforms = procedural.gaussian_transforms(creature, animation,
                                                np.arange(spec.frames) / spec.frames)

    def posed(f: int) -> Gaussians:
        return procedural.pose_gaussians(
            creature.gaussians, procedural.Similarity(*(x[f] for x in transforms)))

    first = renderer(posed(0), views.viewmats, views.Ks)
    grid = grid_queries(spec.size, spec.size)
    queries = np.broadcast_to(grid, (spec.views,) + grid.shape).copy()
    valid = queries_in_mask(queries, first.alphas > MASK_THRESHOLD)
    attachment = attach_queries(posed(0), views, spec.size, queries, valid)
    points, normals = track_points(creature, transforms, attachment)
    xy, depth = project_points(points, views.viewmats, views.Ks)
    cosine = facing(points, normals, views.c2w[:, :3, 3])
    xy, depth = np.where(valid[..., None], xy, queries), np.where(valid, depth, 1.0)

    size, num_views = spec.size, spec.views
    video = np.empty((num_views, spec.frames, size, size, 3), np.uint8)
    masks = np.empty((num_views, spec.frames, size, size), bool)
    visible = np.empty((num_views, spec.frames, queries.shape[1]), bool)
    for f in tqdm(range(spec.frames), desc=f"{item.uid}/{item.anim}", unit="frame",
                  leave=False):
        gaussians = posed(f)
        render = first if f == 0 else renderer(gaussians, views.viewmats, views.Ks)
        video[:, f] = np.rint(render.colors * 255.0).astype(np.uint8)
        masks[:, f] = render.alphas > MASK_THRESHOLD
        transmittance = front_transmittance(gaussians, views.viewmats, views.Ks, size, size,
                                            xy[f], depth[f], margin=OCCLUSION_MARGIN,
                                            where=valid)
        visible[:, f] = visibility(xy[f], cosine[f], transmittance, render.alphas) & valid

    paths = item_paths(out, item, num_views)
    for path in [p for group in paths.values() for p in group]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    for i in range(num_views):
        write_video(paths["videos"][i], video[i], fps=FPS)
        _save_npz(paths["masks"][i], mask=masks[i])
    save_cameras(paths["cameras"][0], views, elevation=item.elevation,
                 azimuth_start=item.azimuth_start)
    save_ply(paths["static"][0], creature.gaussians)
    save_tracks(paths["tracks"][0], TrackSet(
        queries=queries.astype(np.float32), valid=valid,
        tracks=xy.transpose(1, 0, 2, 3).astype(np.float32), visibility=visible,
        views=np.arange(num_views, dtype=np.int32),
        frames=np.arange(spec.frames, dtype=np.int32), size=(size, size), tracker="exact"))


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    with atomic_write(path) as file:
        np.savez_compressed(file, **arrays)


def item_info(item: Item, spec: DatasetSpec) -> dict:
    """The item's `uid_info_dict.json` entry {"00": {"angle": ..., "text_prompt": ...}}."""
    creature = procedural.make_creature(item.creature_seed, spec.num_gaussians)
    text = procedural.prompt(creature, procedural.make_animation(creature, item.animation_seed))
    return {"00": {"angle": {"elv": item.elevation, "azi_start": item.azimuth_start},
                   "text_prompt": text}}


# ----------------------------------------------------------------------------- dataset


def generate_dataset(out: str, num_objects: int, spec: DatasetSpec = DatasetSpec(), *,
                     num_animations: int = 1, overwrite: bool = False) -> str:
    """Write (or complete) a synthetic dataset in `out`; returns a one-line summary.

    Items whose files all exist are skipped unless `overwrite`. Raises ValueError when
    `out` holds a dataset made with another `DatasetSpec` (unless `overwrite`), or for a
    non-positive `num_objects` / `num_animations`.
    """
    if num_objects < 1 or num_animations < 1:
        raise ValueError(f"objects and animations must be >= 1, got {num_objects} and "
                         f"{num_animations}")
    os.makedirs(out, exist_ok=True)
    _check_config(out, spec, overwrite)
    items = plan(spec, num_objects, num_animations)
    renderer = make_renderer(spec.size)
    done = skipped = 0
    start = time.perf_counter()
    for item in tqdm(items, desc="synthetic", unit="item"):
        paths = item_paths(out, item, spec.views)
        if not overwrite and all(os.path.isfile(p) for group in paths.values() for p in group):
            skipped += 1
            continue
        generate_item(out, item, spec, renderer)
        done += 1
    seconds = time.perf_counter() - start
    info = _load_json(os.path.join(out, INFO_FILE), default={})
    for item in items:
        info.setdefault(item.uid, {})[item.anim] = item_info(item, spec)
    _write_json(os.path.join(out, INFO_FILE), info)
    return (f"{out}: {done} items generated, {skipped} skipped (complete), "
            f"{num_objects} objects x {num_animations} animations, {spec.views} views x "
            f"{spec.frames} frames at {spec.size}x{spec.size}, {seconds:.1f} s"
            + (f" ({seconds / done:.1f} s per item)" if done else ""))


def _check_config(out: str, spec: DatasetSpec, overwrite: bool) -> None:
    """Record `spec` in out/CONFIG_FILE, or refuse a directory made with another one."""
    path = os.path.join(out, CONFIG_FILE)
    wanted = dataclasses.asdict(spec)
    found = _load_json(path, default=None)
    if found is not None and found != wanted and not overwrite:
        differing = sorted(k for k in wanted.keys() | found.keys()
                           if found.get(k) != wanted.get(k))
        raise ValueError(f"{path}: the dataset was made with other parameters "
                         f"({', '.join(f'{k}={found.get(k)}' for k in differing)}; "
                         f"asked for {', '.join(f'{k}={wanted.get(k)}' for k in differing)});"
                         f" use another output directory or overwrite")
    if found != wanted:
        _write_json(path, wanted)


def _load_json(path: str, default):
    if not os.path.isfile(path):
        return default
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def _write_json(path: str, value) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


# ----------------------------------------------------------------------------- command


def run(config: ml_collections.ConfigDict) -> str:
    """Generate (or complete) the dataset that `config` describes (its keys:
    `configs/synthetic.py`) with `generate_dataset`; returns the one-line summary.

    Raises ValueError naming `config.<key>` for a missing `out` or a value out of range,
    or (from `generate_dataset`) for a directory made with other parameters.
    """
    if not isinstance(config.out, str) or not config.out:
        raise ValueError(f"config.out must name the dataset directory, got {config.out!r}")
    for key, low in {"objects": 1, "animations": 1, "seed": 0, **MINIMUM}.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config.{key} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"config.{key} must be >= {low}, got {value}")
    if not isinstance(config.overwrite, bool):
        raise ValueError(f"config.overwrite must be a bool, got {config.overwrite!r}")
    spec = DatasetSpec(views=config.views, frames=config.frames, size=config.size,
                       seed=config.seed, num_gaussians=config.num_gaussians)
    return generate_dataset(config.out, config.objects, spec,
                            num_animations=config.animations, overwrite=config.overwrite)


def main(argv: Sequence[str]) -> None:
    """The command line (see the module docstring): `run(--config)`, summary on stdout."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    print(run(flags.FLAGS.config))


if __name__ == "__main__":
    # Flags are defined here, not at import, so that importing this module defines none.
    config_flags.DEFINE_config_file("config", config_path("synthetic"),
                                    "ml_collections config file (configs/synthetic.py)")
    app.run(main)
