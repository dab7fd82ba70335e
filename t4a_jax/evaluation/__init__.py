"""Evaluation: TAP-Vid point-tracking metrics (`tapvid`) and the tracking probe of the
paper's Fig. 3 (`python -m t4a_jax.evaluation.probe`); the VBench video metrics and CLIP
scores of the paper's tables will live here too.

    metrics = tapvid_metrics(query_frames, gt_tracks, gt_visible, pred_tracks, pred_visible,
                             size=(256, 256))
    scores = score_tracks(predicted_trackset, reference_trackset)     # percent
"""

from t4a_jax.evaluation.tapvid import THRESHOLDS, score_tracks, tapvid_metrics

__all__ = ["THRESHOLDS", "score_tracks", "tapvid_metrics"]
