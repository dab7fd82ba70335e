"""Stage Two's input: one object's multi-view video with its cameras, masks and static
asset, read from either of two layouts and checked before anything compiles.

    clip = load_clip("data/videos/synth_0000/anim_0")         # MV-Video / synthetic
    clip = load_clip("out/clip")                              # written by t4a_jax.sample
    write_clip("out/clip", videos, views, alphas, canonical, prompt=..., fps=8.0, ...)
    folders = clip_folders("out/clips")                       # a folder of clips

Layouts:

1. One animation of a multi-view set (`t4a_jax.data.mvvideo`):
   `ROOT/videos/<uid>/<anim>/view_{i}.mp4` for i = 0..V-1. Cameras from
   `ROOT/cameras/<uid>/<anim>.npz` (`data.camera_files`) where it exists, else the
   ring of V views of the index `ROOT/uid_info_dict.json` (elevation, first azimuth)
   at the Animate3D orbit (`render.views.ring_views`). Masks from
   `ROOT/masks/<uid>/<anim>/view_{i}.npz` (bool [F, H, W]) where it exists, else
   from the background. The canonical asset is `ROOT/static/<uid>.ply` unless
   `static` names another file (a 3DGS `.ply` or a mesh, `render.assets.load_asset`).
2. A clip folder (`CLIP_FILE` marks it), as `python -m t4a_jax.sample` writes one:
   `clip.json` {"prompt", "fps", "static": the asset file beside it, `static.ply` as
   written}, `view_{i}.mp4`,
   `cameras.npz` (`data.camera_files`), `condition_masks.npz` (`mask` bool [V, H, W]:
   the condition renders' alpha > 0.5, used as frame 0's masks; later frames' masks
   come from the background).

Masks from the background are `data.mvvideo.background_masks` at `mask_threshold`. The
clip's background colour (what the renders are composited over) is the median colour
of the outermost pixel ring of all its frames.

Bad input is a `ClipError` naming the file: missing or non-contiguous views, videos of
different lengths or sizes, masks that do not match their video, cameras whose count
or view indices do not match the videos, a static asset that does not project into
the views (fewer than `MIN_ON_SCREEN` of its centres in front of a camera and inside
its image).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
import zlib
from typing import Sequence

import numpy as np

from t4a_jax.atomic import atomic_directory
from t4a_jax.data.camera_files import load_cameras, save_cameras
from t4a_jax.data.mvvideo import INDEX_FILE, background_masks
from t4a_jax.render.assets import load_asset
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.projection import NEAR_PLANE
from t4a_jax.render.ply import save_ply
from t4a_jax.render.views import ORBIT_DISTANCE, ORBIT_FOVY, ViewSet, ring_views
from t4a_jax.render.visibility import project_points
from t4a_jax.video import read_video, write_video

CLIP_FILE = "clip.json"
STATIC_FILE = "static.ply"
CAMERAS_FILE = "cameras.npz"
CONDITION_MASKS_FILE = "condition_masks.npz"
MIN_ON_SCREEN = 0.5          # the least fraction of asset centres each view must see
DEFAULT_FPS = 8.0
_VIEW_FILE = re.compile(r"view_(\d+)\.mp4")


class ClipError(ValueError):
    """A clip that Stage Two cannot use; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """One object's V views x F frames (H x W pixels).

    videos uint8 [V, F, H, W, 3]; masks bool [V, F, H, W]; viewmats [V, 4, 4] (OpenCV
    world-to-camera) and Ks [V, 3, 3] float32; views [V] int32 (the view files' indices);
    background [3] float32 in [0, 1]; canonical: the static Gaussians.
    """

    name: str
    folder: str
    videos: np.ndarray
    masks: np.ndarray
    viewmats: np.ndarray
    Ks: np.ndarray
    views: np.ndarray
    background: np.ndarray
    canonical: Gaussians
    static_path: str
    prompt: str
    fps: float

    @property
    def num_views(self) -> int:
        return self.videos.shape[0]

    @property
    def num_frames(self) -> int:
        return self.videos.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.videos.shape[2], self.videos.shape[3]


def is_clip(folder: str) -> bool:
    """Whether `folder` is a clip of either layout."""
    return (os.path.isfile(os.path.join(folder, CLIP_FILE))
            or _set_root(folder) is not None)


def clip_folders(spec: str | Sequence[str]) -> list[str]:
    """The clips named by `spec`: a list of clip folders, a comma-separated string of
    them, one clip folder, or a folder whose sub-folders (sorted) are clips."""
    if isinstance(spec, str):
        spec = [s for s in spec.split(",") if s.strip()]
    folders = [os.path.abspath(os.path.expanduser(s.strip())) for s in spec]
    if len(folders) == 1 and not is_clip(folders[0]) and os.path.isdir(folders[0]):
        inner = sorted(os.path.join(folders[0], name) for name in os.listdir(folders[0]))
        folders = [f for f in inner if os.path.isdir(f) and is_clip(f)]
        if not folders:
            raise ClipError(f"{spec[0]}: neither a clip nor a folder of clips (a clip is "
                            f"a folder with {CLIP_FILE}, or ROOT/videos/<uid>/<anim>)")
    for folder in folders:
        if not is_clip(folder):
            raise ClipError(f"{folder}: not a clip (expected {CLIP_FILE} in it, or a "
                            f"ROOT/videos/<uid>/<anim> folder of a multi-view set)")
    if len(set(folders)) != len(folders):
        raise ClipError(f"the same clip is named twice in {list(spec)}")
    return folders


def load_clip(folder: str, *, static: str | None = None, mask_threshold: float = 0.1,
              num_frames: int | None = None, frame_stride: int = 1,
              mesh_samples: int = 20000) -> Clip:
    """Read and check the clip in `folder` (module docstring): the first `num_frames`
    frames (all when None) at `frame_stride`; `static` overrides the canonical asset."""
    folder = os.path.abspath(folder)
    if num_frames is not None and num_frames < 2:
        raise ClipError(f"num_frames={num_frames}: Stage Two needs at least 2 frames")
    if frame_stride < 1:
        raise ClipError(f"frame_stride={frame_stride} must be >= 1")
    if os.path.isfile(os.path.join(folder, CLIP_FILE)):
        parts = _sampled_clip(folder)
    elif _set_root(folder) is not None:
        parts = _set_clip(folder)
    else:
        raise ClipError(f"{folder}: not a clip (no {CLIP_FILE}, not "
                        f"ROOT/videos/<uid>/<anim>)")
    paths = _view_files(folder)
    videos = _read_videos(paths)
    count = videos.shape[1]
    frames = np.arange(0, count, frame_stride)[:num_frames]
    if num_frames is not None and len(frames) < num_frames:
        raise ClipError(f"{paths[0]}: {count} frames, {num_frames} at stride {frame_stride} "
                        f"need {(num_frames - 1) * frame_stride + 1}")
    masks = np.stack([_view_masks(parts["mask_files"][i], video, mask_threshold,
                                  parts["first_masks"], i)
                      for i, video in enumerate(videos)])
    viewmats, ks, views = parts["cameras"](len(paths), videos.shape[2:4])
    static_path = static or parts["static"]
    if not os.path.isfile(static_path):
        raise ClipError(f"{static_path}: the static asset of {folder} does not exist "
                        f"(set --config.static)")
    try:
        canonical = load_asset(static_path, mesh_samples=mesh_samples)
    except (ValueError, OSError) as e:
        raise ClipError(f"{static_path}: cannot load the static asset ({e})") from e
    _check_projection(canonical, viewmats, ks, videos.shape[2:4], static_path)
    return Clip(name=parts["name"], folder=folder, videos=videos[:, frames],
                masks=masks[:, frames], viewmats=viewmats, Ks=ks, views=views,
                background=_background(videos[:, frames]), canonical=canonical,
                static_path=os.path.abspath(static_path), prompt=parts["prompt"],
                fps=parts["fps"])


def write_clip(folder: str, videos: np.ndarray, views: ViewSet, condition_alphas: np.ndarray,
               canonical: Gaussians, *, prompt: str, fps: float, elevation: float,
               azimuth_start: float = 0.0, distance: float = ORBIT_DISTANCE,
               fovy: float = ORBIT_FOVY) -> str:
    """Write a clip folder (layout 2 of the module docstring) atomically: videos
    [V, F, H, W, 3] in [0, 1] (or uint8) seen from `views`, the condition renders'
    alphas [V, H, W], the canonical asset they show. Returns `folder`."""
    if len(videos) != len(views.viewmats) or condition_alphas.shape != videos.shape[
            :1] + videos.shape[2:4]:
        raise ValueError(f"write_clip: videos {videos.shape}, {len(views.viewmats)} views "
                         f"and condition alphas {condition_alphas.shape} do not match")
    with atomic_directory(folder) as tmp:
        for i, video in enumerate(videos):
            write_video(os.path.join(tmp, f"view_{i}.mp4"), video, fps=fps)
        save_cameras(os.path.join(tmp, CAMERAS_FILE), views, elevation=elevation,
                     azimuth_start=azimuth_start, distance=distance, fovy=fovy)
        np.savez_compressed(os.path.join(tmp, CONDITION_MASKS_FILE),
                            mask=np.asarray(condition_alphas) > 0.5)
        save_ply(os.path.join(tmp, STATIC_FILE), canonical)
        with open(os.path.join(tmp, CLIP_FILE), "w", encoding="utf-8") as file:
            json.dump({"prompt": prompt, "fps": fps, "static": STATIC_FILE}, file, indent=1)
    return folder


# ----------------------------------------------------------------------------- layouts


def _set_root(folder: str) -> str | None:
    """ROOT of a `ROOT/videos/<uid>/<anim>` folder, else None."""
    anim_parent = os.path.dirname(os.path.abspath(folder))
    videos = os.path.dirname(anim_parent)
    if os.path.basename(videos) == "videos" and os.path.isdir(folder):
        return os.path.dirname(videos)
    return None


def _set_clip(folder: str) -> dict:
    root = _set_root(folder)
    uid, anim = os.path.basename(os.path.dirname(folder)), os.path.basename(folder)
    prompt, elevation, azimuth_start = "", None, None
    index = os.path.join(root, INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as file:
                entry = json.load(file)[uid][anim]["00"]
            prompt = str(entry["text_prompt"])
            elevation = float(entry["angle"]["elv"])
            azimuth_start = float(entry["angle"]["azi_start"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ClipError(f"{index}: no usable entry [{uid!r}][{anim!r}] with "
                            f"'00'.text_prompt and angle.elv / azi_start "
                            f"({type(e).__name__}: {e})") from e
    camera_file = os.path.join(root, "cameras", uid, f"{anim}.npz")

    def cameras(count, size):
        if os.path.isfile(camera_file):
            return _file_cameras(camera_file, count, size)
        if elevation is None:
            raise ClipError(f"{folder}: no cameras ({camera_file} is missing and {index} "
                            f"has no angles for it)")
        ring = ring_views(count, elevation=elevation, size=size[1],
                          azimuth_start=azimuth_start)
        if size[0] != size[1]:
            raise ClipError(f"{folder}: index cameras need square videos, got {size}")
        return ring.viewmats, ring.Ks, np.arange(count, dtype=np.int32)

    count = len(_view_files(folder))
    return {"name": f"{uid}/{anim}", "prompt": prompt, "fps": 24.0, "cameras": cameras,
            "static": os.path.join(root, "static", f"{uid}.ply"), "first_masks": None,
            "mask_files": [os.path.join(root, "masks", uid, anim, f"view_{i}.npz")
                           for i in range(count)]}


def _sampled_clip(folder: str) -> dict:
    path = os.path.join(folder, CLIP_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            info = json.load(file)
        prompt, static = str(info["prompt"]), str(info["static"])
        fps = float(info.get("fps", DEFAULT_FPS))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ClipError(f"{path}: expected JSON with 'prompt' and 'static' "
                        f"({type(e).__name__}: {e})") from e
    first_masks = None
    masks_path = os.path.join(folder, CONDITION_MASKS_FILE)
    if os.path.isfile(masks_path):
        first_masks = (_read_mask_file(masks_path), masks_path)
    count = len(_view_files(folder))
    return {"name": os.path.basename(folder), "prompt": prompt, "fps": fps,
            "cameras": lambda n, size: _file_cameras(os.path.join(folder, CAMERAS_FILE),
                                                     n, size),
            "static": os.path.join(folder, static), "first_masks": first_masks,
            "mask_files": [None] * count}


# ----------------------------------------------------------------------------- pieces


def _view_files(folder: str) -> list[str]:
    found = sorted(int(m.group(1)) for name in os.listdir(folder)
                   if (m := _VIEW_FILE.fullmatch(name)))
    if not found:
        raise ClipError(f"{folder}: no view_<i>.mp4 videos")
    if found != list(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise ClipError(f"{folder}: views {found} are not view_0 .. view_{len(found) - 1}; "
                        f"missing view_{missing[0]}.mp4")
    return [os.path.join(folder, f"view_{i}.mp4") for i in found]


def _read_videos(paths: list[str]) -> np.ndarray:
    videos = []
    for path in paths:
        try:
            video = read_video(path)
        except (ValueError, OSError) as e:
            raise ClipError(f"{path}: unreadable video ({e})") from e
        if videos and video.shape != videos[0].shape:
            raise ClipError(f"{path}: {video.shape[0]} frames of {video.shape[1]}x"
                            f"{video.shape[2]}, but {paths[0]} has {videos[0].shape[0]} of "
                            f"{videos[0].shape[1]}x{videos[0].shape[2]}: every view must "
                            f"have the same length and size")
        videos.append(video)
    if videos[0].shape[0] < 2:
        raise ClipError(f"{paths[0]}: {videos[0].shape[0]} frame(s); Stage Two needs 2+")
    return np.stack(videos)


def _read_mask_file(path: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            mask = data["mask"]
    except (OSError, KeyError, ValueError, EOFError, AttributeError, zipfile.BadZipFile,
            zlib.error) as e:
        raise ClipError(f"{path}: expected an .npz with a bool 'mask' "
                        f"({type(e).__name__}: {e})") from e
    if mask.dtype != np.bool_:
        raise ClipError(f"{path}: 'mask' must be bool, got {mask.dtype}")
    return mask


def _view_masks(path: str | None, video: np.ndarray, threshold: float,
                first: tuple[np.ndarray, str] | None, view: int) -> np.ndarray:
    """bool [F, H, W] of one view's uint8 video [F, H, W, 3]."""
    if path is not None and os.path.isfile(path):
        mask = _read_mask_file(path)
        if mask.shape != video.shape[:3]:
            raise ClipError(f"{path}: mask {list(mask.shape)} does not match the video's "
                            f"[frames, height, width] {list(video.shape[:3])}")
        return mask
    masks = background_masks(video, threshold)
    if first is not None:
        first_masks, first_path = first
        if first_masks.ndim != 3 or first_masks.shape[1:] != video.shape[1:3] or (
                view >= len(first_masks)):
            raise ClipError(f"{first_path}: masks {list(first_masks.shape)} must be "
                            f"[views, {video.shape[1]}, {video.shape[2]}]")
        masks[0] = first_masks[view]
    return masks


def _file_cameras(path: str, count: int, size: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise ClipError(f"{path}: the clip's cameras file is missing")
    try:
        cameras = load_cameras(path)
    except ValueError as e:
        raise ClipError(str(e)) from e
    if len(cameras.viewmats) != count:
        raise ClipError(f"{path}: {len(cameras.viewmats)} cameras for {count} view videos")
    if not np.array_equal(cameras.views, np.arange(count)):
        raise ClipError(f"{path}: views {cameras.views.tolist()} must be 0..{count - 1}, "
                        f"one camera per view_<i>.mp4 in order")
    centre = cameras.Ks[0, :2, 2]
    if not np.allclose(centre, [size[1] / 2, size[0] / 2], rtol=0.05):
        raise ClipError(f"{path}: K's principal point {centre.tolist()} is not the centre "
                        f"of the {size[1]}x{size[0]} videos (intrinsics of another size?)")
    return cameras.viewmats, cameras.Ks, cameras.views


def _check_projection(canonical: Gaussians, viewmats: np.ndarray, ks: np.ndarray,
                      size: tuple[int, int], path: str) -> None:
    means = np.asarray(canonical.means, np.float64)
    xy, z = project_points(np.broadcast_to(means, (len(viewmats),) + means.shape),
                           viewmats, ks)
    inside = ((z > NEAR_PLANE) & (xy[..., 0] >= 0) & (xy[..., 0] < size[1])
              & (xy[..., 1] >= 0) & (xy[..., 1] < size[0]))
    fraction = inside.mean(axis=1)
    worst = int(np.argmin(fraction))
    if fraction[worst] < MIN_ON_SCREEN:
        raise ClipError(f"{path}: only {100 * fraction[worst]:.0f}% of the static asset's "
                        f"{len(means)} centres project into view {worst} (at least "
                        f"{100 * MIN_ON_SCREEN:.0f}% expected): the asset does not match the "
                        f"clip's cameras (another object, scale or orientation?)")


def _background(videos: np.ndarray) -> np.ndarray:
    """[3] float32 in [0, 1]: the median colour of every frame's outermost pixel ring."""
    ring = np.concatenate([videos[..., 0, :, :], videos[..., -1, :, :],
                           videos[..., 1:-1, 0, :], videos[..., 1:-1, -1, :]], axis=-2)
    return (np.median(ring.reshape(-1, 3), axis=0) / 255.0).astype(np.float32)
