"""Evaluation: TAP-Vid point-tracking metrics (`tapvid`), the tracking probe of the
paper's Fig. 3 (`python -m t4a_jax.evaluation.probe`), VBench's multi-view video metrics
(`video_metrics`, one video's scores and the table's averages in `video_scores`), the
CLIP 4D metrics on Animate3D's test rig (`clip_scores`), the evaluation networks read
from a weights folder (`networks`) and the paper's tables (`tables`). The command that
uses them is `python -m t4a_jax.evaluate`.

    metrics = tapvid_metrics(query_frames, gt_tracks, gt_visible, pred_tracks, pred_visible,
                             size=(256, 256))
    scores = score_tracks(predicted_trackset, reference_trackset)     # percent
"""

from t4a_jax.evaluation.tapvid import THRESHOLDS, score_tracks, tapvid_metrics

__all__ = ["THRESHOLDS", "score_tracks", "tapvid_metrics"]
