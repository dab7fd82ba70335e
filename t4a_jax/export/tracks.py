"""Point tracks of a generated multi-view video for the viewer's tracks tab (paper
Appendix F), from a grid of query points on the object: the Stage One U-Net's own
features matched frame to frame (the probe's tracker, `tracking.feature_tracker`), or
any video tracker (`video_tracks`, e.g. `tools.cotracker.CoTracker3`).

    tracks = video_tracks(CoTracker3("scaled_offline.pth"), video, masks)   # tools/
    tracks = feature_tracks(bundle, video, masks, prompt, tap="up_blocks.1.motion_modules.2")

`video` [V, F, S, S, 3] in [0, 1], `masks` [V, S, S] bool (the condition renders'
object masks: queries are the cells of a `grid` x `grid` lattice over the mask's
bounding box that fall on the object). The features come from one slightly noised
U-Net pass (`pipeline.unet_features`, timestep `timestep`); the matcher has no notion
of occlusion, so every point is marked visible.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from t4a_jax.export.viewer import Tracks
from t4a_jax.models import ModelBundle
from t4a_jax.pipeline import unet_features
from t4a_jax.render import camera_vector
from t4a_jax.tracking.video_tracker import VideoTracker
from t4a_jax.tracking.feature_tracker import track_by_features


def grid_queries(masks: np.ndarray, grid: int) -> np.ndarray:
    """[V, P, 2] pixel queries (+0.5 centres), P = the most any view has: per view the
    lattice points of a `grid` x `grid` lattice over its mask's bounding box that lie on
    the mask; a view with fewer repeats its points (an empty mask gives the image centre)."""
    queries = []
    for mask in np.asarray(masks, bool):
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            queries.append(np.array([[mask.shape[1] / 2, mask.shape[0] / 2]]))
            continue
        gx = np.linspace(xs.min(), xs.max(), grid)
        gy = np.linspace(ys.min(), ys.max(), grid)
        points = np.array([(x, y) for y in gy for x in gx
                           if mask[int(round(y)), int(round(x))]]) + 0.5
        queries.append(points)
    count = max(len(q) for q in queries)
    return np.stack([np.resize(q, (count, 2)) for q in queries]).astype(np.float32)


def feature_tracks(bundle: ModelBundle, video: np.ndarray, masks: np.ndarray, prompt: str,
                   *, views_c2w: np.ndarray | None = None, tap: str, grid: int = 6,
                   timestep: int = 50) -> Tracks:
    """Tracks of the module docstring; `views_c2w` [V, 4, 4] are the views' cameras
    (needed by a U-Net with camera embeddings)."""
    unet = bundle.unet
    if tap not in unet.feature_names():
        raise ValueError(f"feature tap {tap!r} is not a U-Net module")
    if unet.config.use_camera_embedding and views_c2w is None:
        raise ValueError("feature_tracks: this U-Net takes cameras; pass views_c2w")
    frames = jnp.asarray(video, jnp.float32) * 2.0 - 1.0
    cameras = camera_vector(views_c2w) if unet.config.use_camera_embedding else None
    features = unet_features(unet, bundle.vae, frames, bundle.text_states([prompt]),
                             cameras=cameras, timestep=timestep, capture=(tap,))[tap]
    queries = grid_queries(masks, grid)
    size = tuple(video.shape[2:4])
    points = np.asarray(track_by_features(features.astype(jnp.float32), jnp.asarray(queries),
                                          size))
    return Tracks(points=points, visible=np.ones(points.shape[:3], bool),
                  tracker="the U-Net's features (feature matching, no occlusion)")


def video_tracks(tracker: VideoTracker, video: np.ndarray, masks: np.ndarray,
                 grid: int = 6) -> Tracks:
    """Tracks of `grid_queries(masks, grid)` through each view of `video` [V, F, S, S, 3]
    uint8 by a video tracker (e.g. `tools.cotracker.CoTracker3`), one call per view."""
    queries = grid_queries(masks, grid)
    points, visible = zip(*(tracker(np.asarray(view, np.uint8), q)
                            for view, q in zip(video, queries)))
    return Tracks(points=np.stack(points), visible=np.stack(visible),
                  tracker=getattr(tracker, "name", type(tracker).__name__))
