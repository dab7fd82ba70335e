"""Stage One data: the MV-Video layout (real or synthetic), track caches, loaders.

    items, refused = read_index("data/mvvideo")                   # (uid, anim) items
    loader = MVVideoLoader(MVVideoConfig(root="data/mvvideo"), global_batch_size=8)
    batch = shard_batch(next(loader), mesh)     # frames [B, 4, 16, 256, 256, 3] in [-1, 1]
    tracks = load_tracks("tracks/<uid>/<anim>.npz")               # a TrackSet

Modules: `mvvideo` (the reader: 4 views 90 degrees apart, 16 frames with stride 3,
masks, cameras, tracks), `loader` (a deterministic, resumable Grain loader), `tracks`
(the track cache format), `procedural` (animated creatures with exactly known motion)
and `synthetic` (a synthetic MV-Video set of them with exact tracks; also the command
`python -m t4a_jax.data.synthetic`).
"""

from t4a_jax.data.loader import MVVideoLoader, shard_batch
from t4a_jax.data.mvvideo import MVVideoConfig, load_example, read_index
from t4a_jax.data.tracks import TrackSet, load_tracks, save_tracks

__all__ = ["MVVideoConfig", "MVVideoLoader", "TrackSet", "load_example", "load_tracks",
           "read_index", "save_tracks", "shard_batch"]
