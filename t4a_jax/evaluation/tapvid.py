"""TAP-Vid point-tracking metrics (Doersch et al., "TAP-Vid", NeurIPS 2022), with the
definitions of `compute_tapvid_metrics` in google-deepmind/tapnet
`tapnet/evaluation_datasets.py` (checked at commit 26a2b620). Differences of interface
only: coordinates are given in pixels of any size and scaled here, query frames are
integers, visibility replaces occlusion flags, and `query_valid` masks out queries.

Arrays speak the track cache's layout (`t4a_jax.data.tracks`): B clips (TAP-Vid's
"videos"; here the views of one animation), F frames, N query points,

    tracks       [B, F, N, 2]  (x, y) in pixels of an image of `size` = (height, width)
    visible      [B, F, N]     bool, True where the point is seen (TAP-Vid's ~occluded)
    query_frames [B, N]        int, frame index (0..F-1) at which each query was posed

Definitions, per clip, pooled over its queries and evaluated frames (per query with
`per_track`, tapnet's `get_trackwise_metrics`):
- Evaluated: query mode 'first' counts the frames strictly after the query frame (TAP-Vid
  assumes the point is occluded before it), 'strided' every frame but the query frame;
  only queries flagged in `query_valid` count.
- Coordinates are scaled to 256x256 (x by 256 / width, y by 256 / height); a prediction
  is within threshold d (1, 2, 4, 8, 16 px) when its squared distance is < d**2 (strict).
- occlusion_accuracy = #(pred_visible == gt_visible) / #evaluated.
- pts_within_d = #(within d and gt visible) / #(gt visible), ignoring predicted
  visibility; average_pts_within_thresh (delta_avg) is their mean over the five d.
- jaccard_d = TP / (TP + FN + FP) = TP / (#gt visible + FP), with TP = gt visible,
  predicted visible and within d; FP = predicted visible and (gt occluded or not within
  d); FN = gt visible and not TP. average_jaccard (AJ) is their mean over the five d.
A ratio whose denominator is 0 (nothing of that kind to evaluate) is NaN.
"""

from __future__ import annotations

import numpy as np

from t4a_jax.data.tracks import TrackSet

THRESHOLDS = (1, 2, 4, 8, 16)
TAPVID_SIZE = 256
QUERY_MODES = ("first", "strided")
# Predicted and reference query points must agree to this many pixels to be compared.
_QUERY_TOLERANCE_PX = 1e-3


def tapvid_metrics(query_frames: np.ndarray, gt_tracks: np.ndarray, gt_visible: np.ndarray,
                   pred_tracks: np.ndarray, pred_visible: np.ndarray,
                   size: tuple[int, int], *, query_valid: np.ndarray | None = None,
                   query_mode: str = "first", per_track: bool = False
                   ) -> dict[str, np.ndarray]:
    """TAP-Vid metrics as fractions in [0, 1] (see the module docstring for shapes and
    definitions), computed in float64.

    Returns a dict with `occlusion_accuracy`, `pts_within_{1,2,4,8,16}`,
    `average_pts_within_thresh`, `jaccard_{1,2,4,8,16}` and `average_jaccard`, each of
    shape [B] (one value per clip), or [B, N] (one per query) if `per_track`.
    `query_valid` [B, N] bool (default: all True) removes queries from the evaluation.
    """
    query_frames, gt_tracks, gt_visible, pred_tracks, pred_visible = map(
        np.asarray, (query_frames, gt_tracks, gt_visible, pred_tracks, pred_visible))
    if gt_tracks.ndim != 4 or gt_tracks.shape[-1] != 2:
        raise ValueError(f"gt_tracks must be [B, F, N, 2], got {list(gt_tracks.shape)}")
    b, f, n, _ = gt_tracks.shape
    query_valid = np.ones((b, n), bool) if query_valid is None else np.asarray(query_valid)
    _check("gt_tracks", gt_tracks, (b, f, n, 2), np.number)
    _check("pred_tracks", pred_tracks, (b, f, n, 2), np.number)
    _check("gt_visible", gt_visible, (b, f, n), np.bool_)
    _check("pred_visible", pred_visible, (b, f, n), np.bool_)
    _check("query_frames", query_frames, (b, n), np.integer)
    _check("query_valid", query_valid, (b, n), np.bool_)
    if np.any((query_frames < 0) | (query_frames >= f)):
        raise ValueError(f"query_frames must lie in [0, {f}), got values from "
                         f"{query_frames.min()} to {query_frames.max()}")
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be (height, width), got {size}")
    if query_mode not in QUERY_MODES:
        raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")

    frame = np.arange(f)[None, :, None]
    query = query_frames[:, None, :]
    evaluated = (frame > query) if query_mode == "first" else (frame != query)
    evaluated = evaluated & query_valid[:, None, :]
    axes = (1,) if per_track else (1, 2)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.sum(mask & evaluated, axis=axes)

    height, width = size
    scale = np.array([TAPVID_SIZE / width, TAPVID_SIZE / height])
    error = (pred_tracks.astype(np.float64) - gt_tracks.astype(np.float64)) * scale
    squared_distance = np.sum(np.square(error), axis=-1)

    metrics = {"occlusion_accuracy": _ratio(count(pred_visible == gt_visible),
                                            count(np.ones_like(gt_visible)))}
    gt_positives = count(gt_visible)
    for d in THRESHOLDS:
        within = squared_distance < d * d
        true_positive = gt_visible & pred_visible & within
        false_positive = pred_visible & ~(gt_visible & within)
        metrics[f"pts_within_{d}"] = _ratio(count(gt_visible & within), gt_positives)
        metrics[f"jaccard_{d}"] = _ratio(count(true_positive),
                                         gt_positives + count(false_positive))
    metrics["average_pts_within_thresh"] = np.mean(
        [metrics[f"pts_within_{d}"] for d in THRESHOLDS], axis=0)
    metrics["average_jaccard"] = np.mean([metrics[f"jaccard_{d}"] for d in THRESHOLDS],
                                         axis=0)
    return metrics


def score_tracks(predicted: TrackSet, reference: TrackSet) -> dict[str, float]:
    """TAP-Vid metrics of `predicted` against `reference` tracks, in percent (0-100).

    Each view is one TAP-Vid clip; the result is the mean over views, as TAP-Vid
    averages over videos (a view where a metric is 0/0, e.g. one without valid queries,
    does not count toward that metric's mean; NaN if no view counts). Queries are posed
    at `reference.frames[0]` and evaluated in 'first' mode, i.e. at every later frame;
    only queries valid in `reference` count. Both sets must cover the same views and
    frames (in any order), share `size`, and hold the same query points.
    """
    for what in ("views", "frames"):
        ours, theirs = getattr(predicted, what), getattr(reference, what)
        if set(ours.tolist()) != set(theirs.tolist()):
            raise ValueError(
                f"predicted and reference tracks cover different {what}: predicted lacks "
                f"{sorted(set(theirs.tolist()) - set(ours.tolist()))}, has extra "
                f"{sorted(set(ours.tolist()) - set(theirs.tolist()))}")
    if tuple(predicted.size) != tuple(reference.size):
        raise ValueError(f"predicted tracks are in a {tuple(predicted.size)} (H, W) frame, "
                         f"reference tracks in {tuple(reference.size)}")
    aligned = predicted.select(views=reference.views, frames=reference.frames)
    if (aligned.queries.shape != reference.queries.shape or not np.allclose(
            aligned.queries, reference.queries, rtol=0, atol=_QUERY_TOLERANCE_PX)):
        raise ValueError("predicted and reference tracks start from different query "
                         f"points (shapes {list(aligned.queries.shape)} and "
                         f"{list(reference.queries.shape)})")
    per_view = tapvid_metrics(
        np.zeros(reference.valid.shape, np.int32), reference.tracks, reference.visibility,
        aligned.tracks, aligned.visibility, reference.size, query_valid=reference.valid)
    return {name: 100.0 * _mean_defined(values) for name, values in per_view.items()}


def _check(name: str, value: np.ndarray, shape: tuple[int, ...], kind: type) -> None:
    if value.shape != shape or not np.issubdtype(value.dtype, kind):
        raise ValueError(f"{name} must be {kind.__name__} {list(shape)}, "
                         f"got {value.dtype} {list(value.shape)}")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, NaN where the denominator is 0."""
    out = np.full(np.shape(denominator), np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _mean_defined(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(np.mean(defined)) if defined.size else float("nan")
