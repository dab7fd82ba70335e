"""Synthetic MV-Video data: procedural animated creatures with exact point tracks.

    python -m t4a_jax.data.synthetic --out DIR [--objects 4 --animations 1 --views 16
        --frames 48 --size 256 --seed 0 --num-gaussians 4096 --overwrite]

writes the MV-Video layout plus what the real set lacks (V views, F frames, S pixels;
uids `synth_0000`, ..., animations `anim_0`, ...):

    DIR/uid_info_dict.json                 {uid: {anim: {"00": {"angle": {"elv": deg,
                                           "azi_start": deg}, "text_prompt": str}}}}
    DIR/videos/<uid>/<anim>/view_{i}.mp4   [F, S, S, 3] RGB at 24 fps on grey 0.498
    DIR/masks/<uid>/<anim>/view_{i}.npz    `mask`: bool [F, S, S], rendered alpha > 0.5
    DIR/cameras/<uid>/<anim>.npz           `c2w` [V, 4, 4] float32 (Animate3D convention),
                                           `K` [3, 3] float32 (pixels at S x S), `views`
                                           [V] int32, scalars `elevation`,
                                           `azimuth_start`, `distance`, `fovy` (degrees)
    DIR/static/<uid>.ply                   the creature at rest, which is frame 0 of every
                                           animation (3DGS layout, `render.ply.save_ply`)
    DIR/exact_tracks/<uid>/<anim>.npz      a `TrackSet` (t4a_jax.data.tracks), tracker
                                           'exact', every view and frame, 15 x 15 grid
                                           queries on frame 0, valid inside the mask
    DIR/synthetic_config.json              the generation parameters (a rerun must match)

View i sits at azimuth `azi_start + 360 i / V` and elevation `elv` on an orbit of radius
3.0 looking at the origin, vertical field of view 40 degrees (`render.orbit_cameras`).
Each object is `procedural.make_creature(seed=[S, object index])` and each animation
`procedural.make_animation(seed=[S, object index, animation index])`, so a dataset's
first objects do not depend on how many follow.

Exact tracks. For every valid query pixel of frame 0 the Gaussian with the largest
compositing weight there (the one whose colour the pixel mostly shows) is found by
re-evaluating the rasterizer's compositing at that pixel; the tracked point is the
point of the pixel's ray at that Gaussian's depth, attached to the Gaussian. It moves
with the Gaussian's transform (`procedural.gaussian_transforms`, the function that
poses the rendered Gaussians) and is projected into the view at every frame. It is
visible at a frame when it is on screen, on the mask (alpha > 0.5 at its pixel), not
occluded (the Gaussians more than `OCCLUSION_MARGIN` in front of it let at least half
of the light through at its pixel: a transmittance test, which unlike a comparison with
the expected depth is not fooled by pixels that mix two surfaces) and its surface
normal does not face away from the camera (cosine >= `MIN_FACING`, which catches the
far side of thin parts). On the defaults about 99 % of valid queries are visible at
frame 0 (the rest sit on silhouettes) and 90 % over the clip.

Every file is written atomically. An item (uid, animation) whose files all exist is
skipped on a rerun unless `--overwrite`; the track file is written last. At the
defaults one object takes about 40 s on two CPU cores (rendering 48 frames of 16 views
at 256 x 256, about 0.7 s a frame, dominates), `--objects 4` about 3 minutes; a tiny
set (4 views, 6 frames, 128 pixels) takes a few seconds after a few seconds' compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from t4a_jax.atomic import atomic_write
from t4a_jax.data import procedural
from t4a_jax.data.tracks import TrackSet, grid_queries, queries_in_mask, save_tracks
from t4a_jax.render.cameras import orbit_cameras
from t4a_jax.render.gaussians import Gaussians, rgb_from_sh_dc
from t4a_jax.render.ply import save_ply
from t4a_jax.render.projection import ALPHA_THRESHOLD, covariance_3d, project
from t4a_jax.render.rasterize import rasterize
from t4a_jax.video import write_video

DISTANCE = 3.0
FOVY = 40.0
BACKGROUND = 0.498
FPS = 24
RENDER_BATCH = 64          # rasterizer batch size: ~15 % faster than 32 here on a CPU
NEAR, FAR = 0.01, 1e10      # the rasterizer's depth range
MASK_THRESHOLD = 0.5       # rendered alpha above which a pixel is on the object
OCCLUSION_MARGIN = 0.04    # world units: Gaussians this far in front of a point occlude it
MIN_TRANSMITTANCE = 0.5    # a point is seen when at least this much of it shows
MIN_FACING = -0.2          # cosine between the point's normal and the ray to the camera
ELEVATION_RANGE = (0.0, 30.0)
CONFIG_FILE = "synthetic_config.json"
INFO_FILE = "uid_info_dict.json"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What every item of a dataset shares; stored in `CONFIG_FILE`."""

    views: int = 16
    frames: int = 48
    size: int = 256
    seed: int = 0
    num_gaussians: int = 4096

    def __post_init__(self) -> None:
        minimum = {"views": 1, "frames": 1, "size": 16, "num_gaussians": 1024}
        for name, low in minimum.items():
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


class Cameras(NamedTuple):
    """The V orbit views of an item: c2w (Animate3D) and viewmats (OpenCV) [V, 4, 4],
    Ks [V, 3, 3] in pixels, azimuths [V] in degrees."""

    c2w: np.ndarray
    viewmats: np.ndarray
    Ks: np.ndarray
    azimuths: np.ndarray


class Render(NamedTuple):
    """One frame of all views: colors [V, S, S, 3] in [0, 1] on the grey background,
    alphas and expected depths (camera z) [V, S, S]."""

    colors: np.ndarray
    alphas: np.ndarray
    depths: np.ndarray


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


def orbit_views(elevation: float, azimuth_start: float, views: int, size: int) -> Cameras:
    """V cameras evenly spaced in azimuth from `azimuth_start` (degrees)."""
    azimuths = azimuth_start + 360.0 * np.arange(views) / views
    viewmats, ks, c2w = orbit_cameras(elevation, azimuths, distance=DISTANCE,
                                      fovy_degrees=FOVY, width=size, height=size)
    return Cameras(np.asarray(c2w), np.asarray(viewmats), np.asarray(ks), azimuths)


class Renderer:
    """Renders all views of one frame with one compiled function per (V, size, capacity).

    The tile capacity starts at `tile_capacity`, by default about what these creatures
    need (1024 at 256 px, scaling with 1 / size, as smaller images put more Gaussians
    on a tile), never more than the number of Gaussians (which cannot overflow). A frame
    that overflows is rendered again with the capacity raised to 15 % above its need
    (one more compile), so no image is ever cut short; the raised capacity is kept.
    """

    def __init__(self, size: int, tile_capacity: int | None = None):
        self.size = size
        self.tile_capacity = tile_capacity or _round_up(1024 * 256 // size, RENDER_BATCH)

    def __call__(self, gaussians: Gaussians, cameras: Cameras) -> Render:
        while True:
            capacity = min(self.tile_capacity,
                           _round_up(gaussians.num_gaussians, RENDER_BATCH))
            colors, alphas, depths, overflow, needed = jax.device_get(_render_views(
                gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
                rgb_from_sh_dc(gaussians.sh), cameras.viewmats, cameras.Ks,
                size=self.size, tile_capacity=capacity))
            if not overflow.any():
                return Render(colors, alphas, depths)
            self.tile_capacity = _round_up(int(1.15 * needed.max()), 128)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@functools.partial(jax.jit, static_argnames=("size", "tile_capacity"))
def _render_views(means, quats, scales, opacities, rgb, viewmats, ks, *, size: int,
                  tile_capacity: int):
    colors, alphas, meta = rasterize(
        means, quats, scales, opacities, rgb, viewmats, ks, size, size, near=NEAR, far=FAR,
        backgrounds=jnp.full((3,), BACKGROUND, means.dtype), tile_capacity=tile_capacity,
        batch_size=RENDER_BATCH)
    return (jnp.clip(colors, 0.0, 1.0), alphas[..., 0], meta["expected_depths"][..., 0],
            meta["overflow"], meta["max_tile_count"])


# ----------------------------------------------------------------------------- tracks


def dominant_gaussians(gaussians: Gaussians, cameras: Cameras, size: int,
                       queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pixels `queries` [V, N, 2] (x, y) of each view: the index [V, N] of the
    Gaussian with the largest compositing weight alpha_i T_i there, and its camera depth
    [V, N]; index -1 where no Gaussian reaches the pixel. Re-evaluates the rasterizer's
    compositing (same projection, alpha clamp and threshold, depth order)."""
    proj = jax.device_get(_project_views(gaussians.means, gaussians.quats,
                                         gaussians.scales, gaussians.opacities,
                                         cameras.viewmats, cameras.Ks, size=size))
    opacities = np.asarray(gaussians.opacities)
    index = np.full(queries.shape[:2], -1)
    depth = np.zeros(queries.shape[:2])
    for v in range(len(queries)):
        order = np.argsort(proj.depths[v], kind="stable")
        mean, (a, b, c) = proj.means2d[v][order], proj.conics[v][order].T
        dx = queries[v, :, None, 0] - mean[None, :, 0]
        dy = queries[v, :, None, 1] - mean[None, :, 1]
        power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = np.minimum(0.99, opacities[order] * np.exp(-power))
        alpha = np.where((alpha >= ALPHA_THRESHOLD) & proj.valid[v][order], alpha, 0.0)
        in_front = np.exp(np.cumsum(np.log1p(-alpha), axis=1) - np.log1p(-alpha))
        weight = alpha * in_front
        best = np.argmax(weight, axis=1)
        reached = weight[np.arange(len(best)), best] > 0
        index[v] = np.where(reached, order[best], -1)
        depth[v] = proj.depths[v][order[best]]
    return index, depth


@functools.partial(jax.jit, static_argnames=("size",))
def _project_views(means, quats, scales, opacities, viewmats, ks, *, size: int):
    covars = covariance_3d(quats, scales)
    return jax.vmap(lambda v, k: project(means, covars, opacities, v, k, size, size,
                                         NEAR, FAR))(viewmats, ks)


def unproject(pixels: np.ndarray, depth: np.ndarray, cameras: Cameras) -> np.ndarray:
    """World points [V, N, 3] on the rays through `pixels` [V, N, 2] at camera depth
    `depth` [V, N]."""
    k = cameras.Ks.astype(np.float64)
    x = (pixels[..., 0] - k[:, None, 0, 2]) / k[:, None, 0, 0] * depth
    y = (pixels[..., 1] - k[:, None, 1, 2]) / k[:, None, 1, 1] * depth
    camera = np.stack([x, y, depth], axis=-1)
    rotation = cameras.viewmats[:, :3, :3].astype(np.float64)
    translation = cameras.viewmats[:, :3, 3].astype(np.float64)
    return np.einsum("vji,vnj->vni", rotation, camera - translation[:, None])


def attach_queries(gaussians: Gaussians, cameras: Cameras, size: int, queries: np.ndarray,
                   valid: np.ndarray) -> Attachment:
    """Attach each valid query [V, N, 2] of frame 0 (rendered from `gaussians`) to the
    Gaussian its pixel mostly shows, at that Gaussian's depth on the pixel's ray."""
    index, depth = dominant_gaussians(gaussians, cameras, size, queries)
    missing = valid & (index < 0)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} queries inside the mask have no Gaussian "
                         f"reaching their pixel; the mask and the Gaussians disagree")
    valid_index = np.where(valid, index, 0)
    return Attachment(valid_index, unproject(queries, np.where(valid, depth, 1.0), cameras))


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


def project_points(points: np.ndarray, cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (x, y) [..., V, N, 2] and camera depths [..., V, N] of world points
    [..., V, N, 3] in each view (pixel centres at +0.5)."""
    rotation = cameras.viewmats[:, None, :3, :3].astype(np.float64)
    camera = np.einsum("vnij,...vnj->...vni", rotation, points) \
        + cameras.viewmats[:, None, :3, 3]
    k = cameras.Ks[:, None].astype(np.float64)
    z = camera[..., 2]
    xy = np.stack([k[..., 0, 0] * camera[..., 0] / z + k[..., 0, 2],
                   k[..., 1, 1] * camera[..., 1] / z + k[..., 1, 2]], axis=-1)
    return xy, z


def facing(points: np.ndarray, normals: np.ndarray, cameras: Cameras) -> np.ndarray:
    """Cosine [..., V, N] between each point's normal and the direction to its camera."""
    to_camera = cameras.c2w[:, None, :3, 3] - points
    to_camera /= np.linalg.norm(to_camera, axis=-1, keepdims=True)
    return np.sum(normals * to_camera, axis=-1)


def front_transmittance(gaussians: Gaussians, cameras: Cameras, size: int, xy: np.ndarray,
                        depth: np.ndarray, where: np.ndarray | None = None,
                        margin: float = OCCLUSION_MARGIN) -> np.ndarray:
    """[V, N]: the fraction of light that the Gaussians lying more than `margin` in front
    of each point (camera depth `depth` [V, N]) let through at the centre of the pixel
    containing it (`xy` [V, N, 2]), i.e. prod (1 - alpha_i) over those Gaussians with the
    rasterizer's alphas: 1 for an unoccluded point, about 0 behind a surface.

    Only the points where `where` [V, N] is True are evaluated (the others get 1); their
    number is padded to a power of two, so few shapes are ever compiled.
    """
    where = np.ones(depth.shape, bool) if where is None else where
    view, point = np.nonzero(where)
    padded = max(64, 1 << int(np.ceil(np.log2(max(len(view), 1)))))
    pad = padded - len(view)
    transmittance = _front_transmittance(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
        cameras.viewmats, cameras.Ks, np.pad(view, (0, pad)),
        np.pad(xy[view, point], ((0, pad), (0, 0))).astype(np.float32),
        np.pad(depth[view, point] - margin, (0, pad)).astype(np.float32), size=size)
    result = np.ones(depth.shape, np.float32)
    result[view, point] = np.asarray(transmittance)[:len(view)]
    return result


@functools.partial(jax.jit, static_argnames=("size",))
def _front_transmittance(means, quats, scales, opacities, viewmats, ks, view, xy, limit, *,
                         size: int):
    """view [K] int, xy [K, 2], limit [K] -> transmittance [K]."""
    proj = _project_views(means, quats, scales, opacities, viewmats, ks, size=size)
    centre = jnp.floor(xy) + 0.5
    means2d = proj.means2d[view]                                             # [K, G, 2]
    dx = centre[:, None, 0] - means2d[..., 0]
    dy = centre[:, None, 1] - means2d[..., 1]
    a, b, c = (proj.conics[view][..., i] for i in range(3))
    power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = jnp.minimum(0.99, opacities * jnp.exp(-power))
    in_front = proj.valid[view] & (alpha >= ALPHA_THRESHOLD) & (proj.depths[view] < limit[:, None])
    return jnp.exp(jnp.sum(jnp.where(in_front, jnp.log1p(-alpha), 0.0), axis=-1))


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


def generate_item(out: str, item: Item, spec: DatasetSpec, renderer: Renderer) -> None:
    """Render one item and write all its files (see the module docstring)."""
    creature = procedural.make_creature(item.creature_seed, spec.num_gaussians)
    animation = procedural.make_animation(creature, item.animation_seed)
    cameras = orbit_views(item.elevation, item.azimuth_start, spec.views, spec.size)
    transforms = procedural.gaussian_transforms(creature, animation,
                                                np.arange(spec.frames) / spec.frames)

    def posed(f: int) -> Gaussians:
        return procedural.pose_gaussians(
            creature.gaussians, procedural.Similarity(*(x[f] for x in transforms)))

    first = renderer(posed(0), cameras)
    grid = grid_queries(spec.size, spec.size)
    queries = np.broadcast_to(grid, (spec.views,) + grid.shape).copy()
    valid = queries_in_mask(queries, first.alphas > MASK_THRESHOLD)
    attachment = attach_queries(posed(0), cameras, spec.size, queries, valid)
    points, normals = track_points(creature, transforms, attachment)
    xy, depth = project_points(points, cameras)
    cosine = facing(points, normals, cameras)
    xy, depth = np.where(valid[..., None], xy, queries), np.where(valid, depth, 1.0)

    size, num_views = spec.size, spec.views
    video = np.empty((num_views, spec.frames, size, size, 3), np.uint8)
    masks = np.empty((num_views, spec.frames, size, size), bool)
    visible = np.empty((num_views, spec.frames, queries.shape[1]), bool)
    for f in tqdm(range(spec.frames), desc=f"{item.uid}/{item.anim}", unit="frame",
                  leave=False):
        gaussians = posed(f)
        render = first if f == 0 else renderer(gaussians, cameras)
        video[:, f] = np.rint(render.colors * 255.0).astype(np.uint8)
        masks[:, f] = render.alphas > MASK_THRESHOLD
        transmittance = front_transmittance(gaussians, cameras, size, xy[f], depth[f],
                                            where=valid)
        visible[:, f] = visibility(xy[f], cosine[f], transmittance, render.alphas) & valid

    paths = item_paths(out, item, num_views)
    for path in [p for group in paths.values() for p in group]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    for i in range(num_views):
        write_video(paths["videos"][i], video[i], fps=FPS)
        _save_npz(paths["masks"][i], mask=masks[i])
    _save_npz(paths["cameras"][0], c2w=cameras.c2w.astype(np.float32),
              K=cameras.Ks[0].astype(np.float32), views=np.arange(num_views, dtype=np.int32),
              elevation=np.float32(item.elevation),
              azimuth_start=np.float32(item.azimuth_start),
              distance=np.float32(DISTANCE), fovy=np.float32(FOVY))
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
    renderer = Renderer(spec.size)
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
                         f" use another --out or --overwrite")
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m t4a_jax.data.synthetic",
        description="Procedural animated creatures in the MV-Video layout, with masks, "
                    "cameras, static .ply files and exact tracks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset directory")
    parser.add_argument("--objects", type=int, default=4, help="number of creatures")
    parser.add_argument("--animations", type=int, default=1, help="per creature")
    parser.add_argument("--views", type=int, default=16, help="evenly spaced in azimuth")
    parser.add_argument("--frames", type=int, default=48, help="per video (24 fps)")
    parser.add_argument("--size", type=int, default=256, help="video height and width")
    parser.add_argument("--seed", type=int, default=0, help="decides everything")
    parser.add_argument("--num-gaussians", type=int, default=4096, help="per creature")
    parser.add_argument("--overwrite", action="store_true",
                        help="regenerate items that are already complete")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    args = parse_args(argv)
    try:
        spec = DatasetSpec(views=args.views, frames=args.frames, size=args.size,
                           seed=args.seed, num_gaussians=args.num_gaussians)
        summary = generate_dataset(args.out, args.objects, spec,
                                   num_animations=args.animations, overwrite=args.overwrite)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
