"""Point-tracking supervision of Stage One (paper Sec. 3.2), pure functions over arrays.

    drawn = draw_points(key, query_valid, tracks, visibility)     # 8 points per view
    video = video_features(features, num_views)                   # [B, V, F, h, w, C]
    descriptors = sample_descriptors(video, drawn.tracks, (256, 256))
    l_corr = correspondence_loss(descriptors, drawn.visible)      # Eq. 4
    l_pos = position_loss(video, descriptors, drawn.tracks, drawn.visible, (256, 256))
    tracks = track_by_features(features, queries, image_size)     # cosine nearest neighbour

Tracks are [B, V, F, N, 2] pixels (+0.5 centres) of the training images, visibility
[B, V, F, N]. A leaf package: it imports nothing else of t4a_jax. The Stage One objective
that combines these with the diffusion loss is `t4a_jax.training.objective`; the TAP-Vid
metrics and the Fig. 3 probe are in `t4a_jax.evaluation`.
"""

from t4a_jax.tracking.feature_tracker import (resize_features, similarity_maps,
                                              track_by_features)
from t4a_jax.tracking.losses import (correspondence_loss, cosine_similarity, position_loss,
                                     sample_descriptors, soft_argmax_positions,
                                     video_features)
from t4a_jax.tracking.queries import DrawnPoints, draw_points

__all__ = [
    "DrawnPoints", "correspondence_loss", "cosine_similarity", "draw_points",
    "position_loss", "resize_features", "sample_descriptors", "similarity_maps",
    "soft_argmax_positions", "track_by_features", "video_features",
]
