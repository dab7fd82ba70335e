"""The cameras file of a multi-view clip (`.npz`), as the synthetic set and the sampler
write it and Stage Two reads it:

    c2w            float32 [V, 4, 4]  Animate3D camera-to-world (`render.cameras`)
    K              float32 [3, 3]     intrinsics in pixels of the clip's frames
    views          int32   [V]        the view index of each camera (its `view_{i}` file)
    elevation, azimuth_start, distance, fovy   float32 scalars (degrees, world units)

    save_cameras(path, ring_views(4, elevation=15.0, size=256), elevation=15.0)
    cameras = load_cameras(path)          # CameraFile: viewmats, Ks [V, ...], views, ...
"""

from __future__ import annotations

import dataclasses
import zipfile
import zlib

import numpy as np

from t4a_jax.atomic import atomic_write
from t4a_jax.render.cameras import c2w_to_viewmat
from t4a_jax.render.views import ORBIT_DISTANCE, ORBIT_FOVY, ViewSet

SCALARS = ("elevation", "azimuth_start", "distance", "fovy")


@dataclasses.dataclass(frozen=True)
class CameraFile:
    """The file's contents with the rendering cameras: viewmats [V, 4, 4] (OpenCV
    world-to-camera) and Ks [V, 3, 3] beside the stored c2w [V, 4, 4]."""

    c2w: np.ndarray
    viewmats: np.ndarray
    Ks: np.ndarray
    views: np.ndarray
    elevation: float
    azimuth_start: float
    distance: float
    fovy: float


def save_cameras(path: str, views: ViewSet, *, elevation: float, azimuth_start: float = 0.0,
                 distance: float = ORBIT_DISTANCE, fovy: float = ORBIT_FOVY,
                 indices: np.ndarray | None = None) -> None:
    """Write the cameras of `views` (view indices `indices`, default 0..V-1) atomically."""
    count = len(views.c2w)
    indices = np.arange(count) if indices is None else np.asarray(indices)
    with atomic_write(path) as file:
        np.savez_compressed(file, c2w=views.c2w.astype(np.float32),
                            K=views.Ks[0].astype(np.float32),
                            views=indices.astype(np.int32),
                            elevation=np.float32(elevation),
                            azimuth_start=np.float32(azimuth_start),
                            distance=np.float32(distance), fovy=np.float32(fovy))


def load_cameras(path: str) -> CameraFile:
    """Read and check a cameras file; ValueError naming `path` and the key at fault."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("c2w", "K", "views") + SCALARS}
    except KeyError as e:
        raise ValueError(f"{path}: a cameras file needs the keys c2w, K, views, "
                         f"{', '.join(SCALARS)} ({e})") from e
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile,
            zlib.error) as e:
        raise ValueError(f"{path}: not a readable cameras .npz ({type(e).__name__}: {e})"
                         ) from e
    c2w, k, views = arrays["c2w"], arrays["K"], arrays["views"]
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or not len(c2w):
        raise ValueError(f"{path}: c2w must be [V, 4, 4], got {list(c2w.shape)}")
    if k.shape != (3, 3):
        raise ValueError(f"{path}: K must be [3, 3], got {list(k.shape)}")
    if views.shape != (len(c2w),):
        raise ValueError(f"{path}: views must be [{len(c2w)}] (one per camera), got "
                         f"{list(views.shape)}")
    if not (np.all(np.isfinite(c2w)) and np.all(np.isfinite(k))):
        raise ValueError(f"{path}: c2w and K must be finite")
    viewmats = np.asarray(c2w_to_viewmat(c2w.astype(np.float32)), np.float32)
    return CameraFile(c2w.astype(np.float32), viewmats,
                      np.broadcast_to(k.astype(np.float32), (len(c2w), 3, 3)).copy(),
                      views.astype(np.int32),
                      *(float(arrays[key]) for key in SCALARS))
