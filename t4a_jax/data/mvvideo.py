"""The MV-Video reader: the index, the choice of a training clip, and one decoded example.

Layout of a data root (the real MV-Video set, or a synthetic set in the same layout):

    uid_info_dict.json                 {uid: {anim: {"00": {"angle": {"elv", "azi_start"},
                                                            "text_prompt"}}}}
    videos/<uid>/<anim>/view_{i}.mp4   V_all views (16 in MV-Video) evenly spaced in
                                       azimuth: view i at azi_start + 360 i / V_all,
                                       elevation elv (degrees); 48 frames at 24 fps
    masks/<uid>/<anim>/view_{i}.npz    optional: key `mask`, bool [F_video, H, W]
    tracks/<uid>/<anim>.npz            track cache (`t4a_jax.data.tracks.TrackSet`)
    exact_tracks/<uid>/<anim>.npz      optional: exact tracks of a synthetic set

An item is one (uid, anim) of the index whose video folder exists. A training example
takes V = `num_views` views spaced V_all / V apart (90 degrees for V = 4): views
i0 + k V_all / V with i0 random in [0, V_all / V), and F = `num_frames` frames
s, s + stride, ..., s + (F - 1) stride with s random in [0, `max_start`]. Frame 0 of the
clip is the condition frame. An example holds, for S = `size` and N = `num_queries`:

    frames        float32 [V, F, S, S, 3]  RGB in [-1, 1]
    cameras       float32 [V, 16]          Animate3D camera-to-world, unit translation,
                                           row-major (`t4a_jax.render.cameras`)
    masks         bool    [V, F, S, S]     the object
    tracks        float32 [V, F, N, 2]     (x, y) in pixels of the S x S frames
    visibility    bool    [V, F, N]
    queries       float32 [V, N, 2]        tracks at clip frame 0
    query_valid   bool    [V, N]           query on the object and visible at frame 0
    views         int32   [V]              view indices into the item's videos
    frame_indices int32   [F]              frame indices into the videos
    index         int32   []               the item's position in the index
    uid, anim, prompt  str

Frames are resized with Pillow's bicubic filter, which widens its support by the
reduction factor when shrinking (antialiased, like torchvision's `antialias=True`).
Masks are made at the video's resolution, from the view's mask file or, where it has
none, from the background: per frame, the background colour is the per-channel median
of the frame's outermost pixel ring (the object must cover less than half of it), and a
pixel is on the object when some channel differs from that colour by more than
`mask_threshold` (in [0, 1] intensity units). Masks are then resized with the box filter
(area coverage) and kept where at least half of the pixel is covered.

A track cache holds its grid of queries on its first frame `frames[0]` (frame 0 of the
videos as `tools/cache_tracks.py` and the synthetic generator write them), in pixels of
its `size` (height, width); it must cover the example's views and frames. The example
selects those and scales the coordinates by S / width and S / height (exact in the +0.5
pixel-centre convention: pixel edges map to pixel edges). So for a start offset s the
query points are the cache's grid points *as tracked to frame s*, valid where the
cache's query is valid and visible at frame s. With `tracks_dir=None` the track fields
are zeros with every query invalid (static shapes).

A video, mask or track file that cannot be used raises `SkippedItem` naming it, for the
loader to skip and count; an unusable index raises `ValueError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
import zipfile
import zlib

import jax
import numpy as np
from PIL import Image

from t4a_jax.data.tracks import GRID_SIZE, load_tracks, rescale_tracks
from t4a_jax.render.cameras import camera_vector, orbit_c2w
from t4a_jax.video import read_video

INDEX_FILE = "uid_info_dict.json"
_VIEW_FILE = re.compile(r"view_(\d+)\.mp4")
MISSING_TRACKS_POLICIES = ("skip", "error")


class DataWarning(UserWarning):
    """A data item was refused or skipped; the message names the file."""


class SkippedItem(ValueError):
    """An item whose file at `path` cannot be used; `kind` says which file, and is the
    loader's statistic `skipped_<kind>`: 'videos', 'masks', 'missing_tracks' or
    'bad_tracks'."""

    KINDS = ("videos", "masks", "missing_tracks", "bad_tracks")

    def __init__(self, kind: str, path: str, reason: str):
        assert kind in self.KINDS, kind
        super().__init__(f"{path}: {reason}")
        self.kind, self.path = kind, path


@dataclasses.dataclass(frozen=True)
class MVVideoConfig:
    """What one example is made of (see the module docstring).

    `tracks_dir` is relative to `root` unless absolute; None trains without tracks.
    `exact_tracks_fallback` reads `root/exact_tracks/<uid>/<anim>.npz` where the track
    cache has no file. `missing_tracks`: 'skip' (skip and count the item) or 'error'.
    """

    root: str
    size: int = 256
    num_views: int = 4
    num_frames: int = 16
    frame_stride: int = 3
    max_start: int = 2
    num_queries: int = GRID_SIZE * GRID_SIZE
    tracks_dir: str | None = "tracks"
    exact_tracks_fallback: bool = False
    missing_tracks: str = "skip"
    mask_threshold: float = 0.05

    def __post_init__(self) -> None:
        for name in ("size", "num_views", "num_frames", "frame_stride", "num_queries"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MVVideoConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.max_start < 0:
            raise ValueError(f"MVVideoConfig.max_start must be >= 0, got {self.max_start}")
        if self.missing_tracks not in MISSING_TRACKS_POLICIES:
            raise ValueError(f"MVVideoConfig.missing_tracks must be one of "
                             f"{MISSING_TRACKS_POLICIES}, got {self.missing_tracks!r}")
        if not 0.0 <= self.mask_threshold < 1.0:
            raise ValueError(f"MVVideoConfig.mask_threshold must be in [0, 1), "
                             f"got {self.mask_threshold}")

    @property
    def frames_needed(self) -> int:
        """Frames a video must have for every start offset."""
        return self.max_start + (self.num_frames - 1) * self.frame_stride + 1


@dataclasses.dataclass(frozen=True)
class Item:
    """One animation of the index; `num_views` is the number of its view videos."""

    index: int
    uid: str
    anim: str
    prompt: str
    elevation: float
    azimuth_start: float
    num_views: int

    def azimuths(self, views: np.ndarray) -> np.ndarray:
        """Azimuths [V] in degrees of the given view indices (evenly spaced views)."""
        return self.azimuth_start + 360.0 * np.asarray(views) / self.num_views


@dataclasses.dataclass(frozen=True)
class Clip:
    """The views [V] and video frames [F] (int32) of one example."""

    views: np.ndarray
    frames: np.ndarray


def read_index(root: str | os.PathLike, num_views: int = 4) -> tuple[list[Item], list[str]]:
    """The items of `root/uid_info_dict.json` whose video folder exists, sorted by
    (uid, anim), and messages for the refused ones (also warned as `DataWarning`).

    An item is refused when its `view_{i}.mp4` files are not exactly i = 0..V_all-1
    with V_all a multiple of `num_views`.

    Raises:
      ValueError, naming the file, when the index is missing, not valid JSON, has an
      entry without `angle.elv`, `angle.azi_start` or `text_prompt`, or yields no item.
    """
    root = os.fspath(root)
    path = os.path.join(root, INDEX_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            info = json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the dataset index ({e})") from e
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object {{uid: {{anim: ...}}}}, "
                         f"got {type(info).__name__}")
    entries, refused = [], []
    for uid, anims in sorted(info.items()):
        if not isinstance(anims, dict):
            raise ValueError(f"{path}: entry {uid!r} must map animations to their "
                             f"info, got {type(anims).__name__}")
        for anim, anim_info in sorted(anims.items()):
            fields = _parse_entry(path, uid, anim, anim_info)
            folder = os.path.join(root, "videos", uid, anim)
            if not os.path.isdir(folder):
                continue
            num_all, problem = _count_views(folder, num_views)
            if problem:
                refused.append(f"{folder}: {problem}; item refused")
                warnings.warn(refused[-1], DataWarning, stacklevel=2)
                continue
            entries.append((uid, anim, *fields, num_all))
    if not entries:
        raise ValueError(f"{path}: no usable item (an entry of the index with videos in "
                         f"{os.path.join(root, 'videos', '<uid>', '<anim>')}); "
                         f"{len(refused)} refused")
    items = [Item(i, *entry) for i, entry in enumerate(entries)]
    return items, refused


def _parse_entry(path: str, uid: str, anim: str, anim_info) -> tuple[str, float, float]:
    """(prompt, elevation, azimuth_start) of one index entry."""
    try:
        entry = anim_info["00"]
        return (str(entry["text_prompt"]), float(entry["angle"]["elv"]),
                float(entry["angle"]["azi_start"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: entry [{uid!r}][{anim!r}] must hold "
                         f"{{'00': {{'angle': {{'elv': deg, 'azi_start': deg}}, "
                         f"'text_prompt': str}}}} ({type(e).__name__}: {e})") from e


def _count_views(folder: str, num_views: int) -> tuple[int, str]:
    """(V_all, problem): the number of view videos in `folder`, or why it is unusable."""
    found = sorted(int(m.group(1)) for name in os.listdir(folder)
                   if (m := _VIEW_FILE.fullmatch(name)))
    if found != list(range(len(found))):
        return len(found), f"view files {found} are not view_0 .. view_{len(found) - 1}"
    if not found or len(found) % num_views:
        return len(found), f"{len(found)} views, not a positive multiple of {num_views}"
    return len(found), ""


def choose_clip(item: Item, config: MVVideoConfig, rng: np.random.Generator) -> Clip:
    """The views (first one random, then evenly spaced) and frames (random start, fixed
    stride) of one example, drawn from `rng`."""
    spacing = item.num_views // config.num_views
    first = int(rng.integers(spacing))
    start = int(rng.integers(config.max_start + 1))
    views = first + spacing * np.arange(config.num_views)
    frames = start + config.frame_stride * np.arange(config.num_frames)
    return Clip(views.astype(np.int32), frames.astype(np.int32))


def load_example(item: Item, clip: Clip, config: MVVideoConfig) -> dict[str, np.ndarray]:
    """Decode and assemble one example (see the module docstring for the fields).

    Raises:
      SkippedItem naming a video that is missing, undecodable or too short, a mask file
      that is unreadable or of the wrong shape, a missing track file (with
      `missing_tracks='skip'`) or an unusable one.
      ValueError naming a missing track file with `missing_tracks='error'`.
    """
    frames, masks = [], []
    for view in clip.views:
        video = read_view(config.root, item, int(view), config.frames_needed)[clip.frames]
        frames.append(resize_images(video, config.size, Image.Resampling.BICUBIC))
        mask = view_masks(config, item, int(view), clip, video)
        masks.append(resize_masks(mask, config.size))
    return {
        "frames": np.stack(frames).astype(np.float32) / 127.5 - 1.0,
        "cameras": orbit_camera_vectors(item.elevation, item.azimuths(clip.views)),
        "masks": np.stack(masks),
        **_example_tracks(config, item, clip),
        "views": clip.views, "frame_indices": clip.frames,
        "index": np.int32(item.index), "uid": item.uid, "anim": item.anim,
        "prompt": item.prompt,
    }


def orbit_camera_vectors(elevation: float, azimuths: np.ndarray) -> np.ndarray:
    """float32 [V, 16] U-Net camera inputs of orbit views at `elevation` and `azimuths`
    [V] (degrees), computed on the host CPU: data workers must not claim an accelerator."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        vectors = _camera_vectors(np.float32(elevation), np.asarray(azimuths, np.float32))
    return np.asarray(vectors)


@jax.jit
def _camera_vectors(elevation: jax.Array, azimuths: jax.Array) -> jax.Array:
    # One compiled call: a fresh worker compiles once instead of once per operation.
    return camera_vector(orbit_c2w(elevation, azimuths))


def read_view(root: str, item: Item, view: int, frames_needed: int) -> np.ndarray:
    path = os.path.join(root, "videos", item.uid, item.anim, f"view_{view}.mp4")
    try:
        video = read_video(path)
    except ValueError as e:
        raise SkippedItem("videos", path, f"unusable video ({e})") from e
    if len(video) < frames_needed:
        raise SkippedItem("videos", path, f"{len(video)} frames, the clip needs "
                                         f"{frames_needed} (truncated?)")
    return video


def resize_images(images: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """uint8 images [F, H, W(, 3)] -> uint8 [F, size, size(, 3)] with Pillow."""
    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), resample))
                     for image in images])


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """bool [F, H, W] -> bool [F, size, size]: area coverage (box filter), kept where at
    least half of the pixel is covered."""
    return resize_images(masks.astype(np.uint8) * 255, size, Image.Resampling.BOX) >= 128


def view_masks(config: MVVideoConfig, item: Item, view: int, clip: Clip,
                video: np.ndarray) -> np.ndarray:
    """bool [F, H, W] at the video's resolution: the clip's frames of the view's mask
    file where there is one, else the background of the clip's `video` [F, H, W, 3]."""
    path = os.path.join(config.root, "masks", item.uid, item.anim, f"view_{view}.npz")
    if not os.path.exists(path):
        return background_masks(video, config.mask_threshold)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with data:
            mask = data["mask"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise SkippedItem("masks", path, f"unreadable mask file, expected an .npz with "
                                         f"key 'mask' ({type(e).__name__}: {e})") from e
    height, width = video.shape[1:3]
    if (mask.ndim != 3 or mask.shape[1:] != (height, width) or mask.dtype != np.bool_
            or len(mask) < config.frames_needed):
        raise SkippedItem("masks", path, f"mask must be bool [>= {config.frames_needed}, "
                                         f"{height}, {width}] like the video, got "
                                         f"{mask.dtype} {list(mask.shape)}")
    return mask[clip.frames]


def background_masks(frames: np.ndarray, threshold: float) -> np.ndarray:
    """bool [..., H, W]: pixels of uint8 `frames` [..., H, W, 3] whose colour differs
    from the background by more than `threshold` (in [0, 1]) in some channel. The
    background of each frame is the per-channel median of its outermost pixel ring."""
    ring = np.concatenate([frames[..., 0, :, :], frames[..., -1, :, :],
                           frames[..., 1:-1, 0, :], frames[..., 1:-1, -1, :]], axis=-2)
    background = np.median(ring, axis=-2)
    difference = np.abs(frames.astype(np.float32) - background[..., None, None, :])
    return difference.max(axis=-1) > threshold * 255.0


def track_path(config: MVVideoConfig, item: Item) -> str | None:
    """The track file the example reads: the cache's, or with `exact_tracks_fallback`
    the exact tracks where the cache has none; None without tracks."""
    if config.tracks_dir is None:
        return None
    path = os.path.join(config.root, config.tracks_dir, item.uid, f"{item.anim}.npz")
    exact = os.path.join(config.root, "exact_tracks", item.uid, f"{item.anim}.npz")
    if config.exact_tracks_fallback and not os.path.exists(path) and os.path.exists(exact):
        return exact
    return path


def _example_tracks(config: MVVideoConfig, item: Item, clip: Clip) -> dict[str, np.ndarray]:
    """tracks, visibility, queries and query_valid of the clip, in training pixels."""
    v, f, n = config.num_views, config.num_frames, config.num_queries
    path = track_path(config, item)
    if path is None:
        return {"tracks": np.zeros((v, f, n, 2), np.float32),
                "visibility": np.zeros((v, f, n), bool),
                "queries": np.zeros((v, n, 2), np.float32),
                "query_valid": np.zeros((v, n), bool)}
    if not os.path.exists(path):
        if config.missing_tracks == "error":
            raise ValueError(f"{path}: no track file for {item.uid}/{item.anim} "
                             f"(missing_tracks='error')")
        raise SkippedItem("missing_tracks", path, "no track file")
    try:
        tracks = load_tracks(path).select(views=clip.views, frames=clip.frames)
    except ValueError as e:
        raise SkippedItem("bad_tracks", path, f"unusable track file ({e})") from e
    if tracks.tracks.shape[2] != n:
        raise SkippedItem("bad_tracks", path, f"{tracks.tracks.shape[2]} queries, "
                                              f"expected num_queries={n}")
    points = rescale_tracks(tracks, config.size).tracks
    return {"tracks": points, "visibility": tracks.visibility,
            "queries": points[:, 0], "query_valid": tracks.valid & tracks.visibility[:, 0]}
