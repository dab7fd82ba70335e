"""What a Stage Two run leaves for one object, in its output folder:

    frames/frame_{f:03d}.ply   one standard 3DGS .ply per frame of the clip: the canonical
                               Gaussians in their input order, deformed to the frame,
                               with the frame's colour (the 4D SH at its time)
    asset/                     the 4D asset (`reconstruction.asset`): any time renders
    views.mp4, views.gif       the input (top row) above the fit (bottom row), one column
                               per view: the training views, then up to `MAX_SHOWN`
                               held-out ones
    turntable.mp4, .gif        the animated asset on an orbit: frame i at azimuth
                               360 i / T and clip time (i mod F) / (F - 1)
    metrics.json               PSNR, SSIM and mask IoU of the fit against every view of
                               the clip at every frame, and their means over the
                               training views and over the held-out ones

Every image comes from `render.views.ViewRenderer` over the clip's background; masks
of the fit are its alpha > 0.5 (as the synthetic set's are).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from tqdm import tqdm

from t4a_jax.atomic import atomic_write
from t4a_jax.image_metrics import mask_iou, psnr, ssim
from t4a_jax.reconstruction.asset import Asset4D, save_asset4d
from t4a_jax.reconstruction.clips import Clip
from t4a_jax.render.ply import save_ply
from t4a_jax.render.views import ViewRenderer, ring_views
from t4a_jax.video import write_video

MASK_THRESHOLD = 0.5
MAX_SHOWN = 4            # held-out views shown in views.mp4 beside the training views
VIDEO_FORMATS = ("mp4", "gif")


def render_views(asset: Asset4D, clip: Clip, renderer: ViewRenderer, desc: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The fit in all the clip's views at all its frames: colours [V, F, H, W, 3] and
    alphas [V, F, H, W] float32."""
    colors, alphas = [], []
    for f in tqdm(range(clip.num_frames), desc=desc, unit="frame", leave=False,
                  disable=desc is None):
        out = renderer(asset.at_frame(f), clip.viewmats, clip.Ks)
        colors.append(out.colors)
        alphas.append(out.alphas)
    return np.stack(colors, axis=1), np.stack(alphas, axis=1)


def clip_metrics(colors: np.ndarray, alphas: np.ndarray, clip: Clip,
                 train_views: np.ndarray) -> dict[str, Any]:
    """PSNR / SSIM / mask IoU per view and frame (lists [V][F]) and the means over the
    training views and the held-out views (absent without held-out views)."""
    target = clip.videos.astype(np.float32) / 255.0
    per = {"psnr": np.asarray(psnr(colors, target)),
           "ssim": np.asarray(ssim(colors, target)),
           "mask_iou": np.asarray(mask_iou(alphas > MASK_THRESHOLD, clip.masks))}
    heldout = np.setdiff1d(np.arange(clip.num_views), train_views)
    result: dict[str, Any] = {
        "name": clip.name, "views": clip.views.tolist(),
        "train_views": clip.views[train_views].tolist(),
        "heldout_views": clip.views[heldout].tolist(), "num_frames": clip.num_frames,
        "per_view": {k: v.tolist() for k, v in per.items()},
        "train": {k: float(v[train_views].mean()) for k, v in per.items()}}
    if len(heldout):
        result["heldout"] = {k: float(v[heldout].mean()) for k, v in per.items()}
    return result


def comparison_frames(clip: Clip, colors: np.ndarray, train_views: np.ndarray
                      ) -> np.ndarray:
    """[F, 2H, C W, 3] float: input above fit, columns = shown views (module docstring)."""
    heldout = np.setdiff1d(np.arange(clip.num_views), train_views)[:MAX_SHOWN]
    shown = np.concatenate([train_views, heldout])
    top = clip.videos[shown].astype(np.float32) / 255.0           # [C, F, H, W, 3]
    grid = np.stack([top, colors[shown]])                          # [2, C, F, H, W, 3]
    rows, cols, f, h, w, _ = grid.shape
    return grid.transpose(2, 0, 3, 1, 4, 5).reshape(f, rows * h, cols * w, 3)


def orbit_of(clip: Clip) -> tuple[float, float, float]:
    """(elevation, azimuth of view 0, distance) of the clip's first camera, degrees:
    the turntable's orbit."""
    rotation, translation = clip.viewmats[0, :3, :3], clip.viewmats[0, :3, 3]
    centre = -rotation.T @ translation
    distance = float(np.linalg.norm(centre))
    elevation = float(np.degrees(np.arcsin(centre[2] / distance)))
    azimuth = float(np.degrees(np.arctan2(centre[1], centre[0])))
    return elevation, azimuth, distance


def turntable_frames(asset: Asset4D, clip: Clip, renderer: ViewRenderer, count: int
                     ) -> np.ndarray:
    """[count, S, S, 3]: the animated asset on the clip's orbit (module docstring), at
    the renderer's size S (square; the clip's field of view)."""
    elevation, azimuth, distance = orbit_of(clip)
    height = clip.size[0]
    fovy = float(np.degrees(2 * np.arctan(height / (2 * clip.Ks[0, 1, 1]))))
    views = ring_views(count, elevation=elevation, size=renderer.width,
                       azimuth_start=azimuth, distance=distance, fovy=fovy)
    frames = []
    for i in tqdm(range(count), desc="turntable", unit="frame", leave=False):
        out = renderer(asset.at_frame(i % clip.num_frames), views.viewmats[i:i + 1],
                       views.Ks[i:i + 1])
        frames.append(out.colors[0])
    return np.stack(frames)


def write_frame_plys(folder: str, asset: Asset4D) -> list[str]:
    """frames/frame_{f:03d}.ply for every frame of the clip."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for f in range(asset.num_frames):
        paths.append(os.path.join(folder, f"frame_{f:03d}.ply"))
        save_ply(paths[-1], asset.at_frame(f))
    return paths


def write_videos(stem: str, frames: np.ndarray, fps: float) -> list[str]:
    paths = [f"{stem}.{ext}" for ext in VIDEO_FORMATS]
    for path in paths:
        write_video(path, frames, fps=fps)
    return paths


def export_object(out: str, asset: Asset4D, clip: Clip, train_views: np.ndarray, *,
                  turntable: int = 48, tile_capacity: int = 1024) -> dict[str, Any]:
    """Write everything of the module docstring for one fitted object into `out`;
    returns its metrics (as written to metrics.json)."""
    os.makedirs(out, exist_ok=True)
    save_asset4d(os.path.join(out, "asset"), asset)
    write_frame_plys(os.path.join(out, "frames"), asset)
    height, width = clip.size
    renderer = ViewRenderer(width, height, background=clip.background,
                            tile_capacity=tile_capacity)
    colors, alphas = render_views(asset, clip, renderer, desc=f"{clip.name}: views")
    metrics = clip_metrics(colors, alphas, clip, train_views)
    write_videos(os.path.join(out, "views"), comparison_frames(clip, colors, train_views),
                 clip.fps)
    if turntable:
        write_videos(os.path.join(out, "turntable"),
                     turntable_frames(asset, clip, renderer, turntable), clip.fps)
    with atomic_write(os.path.join(out, "metrics.json")) as file:
        file.write(json.dumps(metrics, indent=1).encode())
    return metrics
