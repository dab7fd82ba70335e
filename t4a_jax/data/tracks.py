"""The track cache: point tracks of one animation, in one `.npz` file.

Written by `tools/cache_tracks.py` (CoTracker3, or the oracle that copies exact tracks)
and by `t4a_jax.data.synthetic` (exact tracks of the known motion); read by the data
loader and the tracking metrics. Layout, for V views, F frames and N = grid**2 queries:

    queries     [V, N, 2] float32  query points (x, y) in pixels of frame `frames[0]`,
                                   a `grid` x `grid` lattice of pixel centres
    valid       [V, N]    bool     the query lies on the object (inside its mask)
    tracks      [V, F, N, 2] float32  (x, y) in pixels at every listed frame
    visibility  [V, F, N] bool     the tracked point is seen (not occluded, on screen);
                                   always False where `valid` is False
    views       [V] int32          view indices into the animation's videos
    frames      [F] int32          frame indices into the videos, increasing
    size        [2] int32          (height, width) of the pixel frame of queries/tracks
    tracker     str                who made the tracks ('exact', 'cotracker3', ...)

Pixel convention: the render's, pixel (row i, col j) has centre (j + 0.5, i + 0.5).
Invalid queries stay in the arrays (static shapes for jit); their tracks are
meaningless and their visibility False. Files are written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib

import numpy as np

from t4a_jax.atomic import atomic_write

GRID_SIZE = 15
_FIELDS = ("queries", "valid", "tracks", "visibility", "views", "frames", "size", "tracker")


@dataclasses.dataclass(frozen=True)
class TrackSet:
    """Tracks of one animation (see the module docstring for shapes and conventions)."""

    queries: np.ndarray
    valid: np.ndarray
    tracks: np.ndarray
    visibility: np.ndarray
    views: np.ndarray
    frames: np.ndarray
    size: tuple[int, int]
    tracker: str

    def __post_init__(self) -> None:
        check_track_set(self)

    def select(self, views=None, frames=None) -> "TrackSet":
        """The tracks at a subset of the stored views / frames, given as indices into
        the videos (must be among `self.views` / `self.frames`). Queries are unchanged."""
        v = _positions(self.views, views, "view")
        f = _positions(self.frames, frames, "frame")
        return dataclasses.replace(
            self, queries=self.queries[v], valid=self.valid[v],
            tracks=self.tracks[v][:, f], visibility=self.visibility[v][:, f],
            views=self.views[v], frames=self.frames[f])


def rescale_tracks(tracks: TrackSet, size: int) -> TrackSet:
    """`tracks` in pixels of a size x size frame (image edges map to image edges, which
    is exact in the +0.5 pixel-centre convention)."""
    height, width = tracks.size
    scale = np.array([size / width, size / height], np.float32)
    return dataclasses.replace(
        tracks, queries=(tracks.queries * scale).astype(np.float32),
        tracks=(tracks.tracks * scale).astype(np.float32), size=(size, size))


def grid_queries(height: int, width: int, grid: int = GRID_SIZE) -> np.ndarray:
    """[grid * grid, 2] (x, y) pixel centres of a grid x grid lattice spread evenly over
    the image, row-major (y outer). Lattice point k of `grid` sits at the centre of
    pixel floor((k + 0.5) * size / grid)."""
    xs = np.floor((np.arange(grid) + 0.5) * width / grid) + 0.5
    ys = np.floor((np.arange(grid) + 0.5) * height / grid) + 0.5
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=-1).astype(np.float32)


def queries_in_mask(queries: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[..., N] bool: whether each (x, y) query [..., N, 2] falls on a True pixel of
    `mask` [..., H, W] (the pixel containing it; leading dims match). A query outside
    the image is False."""
    h, w = mask.shape[-2:]
    x, y = queries[..., 0], queries[..., 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    cols = np.clip(np.floor(x).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(y).astype(np.int64), 0, h - 1)
    flat = np.asarray(mask, bool).reshape(mask.shape[:-2] + (h * w,))
    return np.take_along_axis(flat, rows * w + cols, axis=-1) & inside


def save_tracks(path: str | os.PathLike, tracks: TrackSet) -> None:
    """Write `tracks` to `path` (`.npz`, compressed) atomically; creates the directory."""
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    arrays = {name: getattr(tracks, name) for name in _FIELDS}
    arrays["size"] = np.asarray(tracks.size, np.int32)
    arrays["tracker"] = np.asarray(tracks.tracker)
    with atomic_write(path) as file:
        np.savez_compressed(file, **arrays)


def load_tracks(path: str | os.PathLike) -> TrackSet:
    """Read a track file; a missing field, a wrong shape or dtype, or an unreadable file
    is a `ValueError` naming the file and what was expected."""
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with data:
            files = data.files
            arrays = {name: data[name] for name in _FIELDS if name in files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path}: not a readable track file ({e})") from e
    missing = [name for name in _FIELDS if name not in arrays]
    if missing:
        raise ValueError(f"{path}: track file lacks {missing} (has {files})")
    try:
        return TrackSet(
            queries=arrays["queries"], valid=arrays["valid"], tracks=arrays["tracks"],
            visibility=arrays["visibility"], views=arrays["views"], frames=arrays["frames"],
            size=tuple(int(s) for s in np.ravel(arrays["size"])),
            tracker=str(arrays["tracker"]))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def check_track_set(t: TrackSet) -> None:
    """Raise ValueError naming the first field whose shape or dtype breaks the layout."""
    if t.tracks.ndim != 4 or t.tracks.shape[-1] != 2:
        raise ValueError(f"tracks must be [V, F, N, 2], got {t.tracks.shape}")
    v, f, n, _ = t.tracks.shape
    expected = {"queries": ((v, n, 2), np.floating), "valid": ((v, n), np.bool_),
                "tracks": ((v, f, n, 2), np.floating), "visibility": ((v, f, n), np.bool_),
                "views": ((v,), np.integer), "frames": ((f,), np.integer)}
    for name, (shape, kind) in expected.items():
        value = getattr(t, name)
        if value.shape != shape or not np.issubdtype(value.dtype, kind):
            raise ValueError(f"{name} must be {kind.__name__} {list(shape)} "
                             f"(V={v}, F={f}, N={n}), got {value.dtype} {list(value.shape)}")
    if len(t.size) != 2 or min(t.size) <= 0:
        raise ValueError(f"size must be (height, width), got {t.size}")
    if f > 1 and np.any(np.diff(t.frames) <= 0):
        raise ValueError(f"frames must increase, got {t.frames.tolist()}")
    if np.any(t.visibility & ~t.valid[:, None, :]):
        raise ValueError("visibility is True for queries that are not valid")
    if not t.tracker:
        raise ValueError("tracker name is empty")


def _positions(stored: np.ndarray, wanted, what: str) -> np.ndarray:
    if wanted is None:
        return np.arange(len(stored))
    lookup = {int(x): i for i, x in enumerate(stored)}
    missing = [int(x) for x in np.atleast_1d(wanted) if int(x) not in lookup]
    if missing:
        raise ValueError(f"{what}s {missing} are not in the track file (has "
                         f"{stored.tolist()})")
    return np.array([lookup[int(x)] for x in np.atleast_1d(wanted)], dtype=np.intp)
