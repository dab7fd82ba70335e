"""One video's Table 1 scores, and the averages over videos that the table shows.

    result = score_video(networks, video, condition, flow=flow, interpolator=None)
    row = table1_row([result, ...])       # {"i2v": ..., "motion_smoothness": None, ...}

`score_video` runs the networks once per video (DINO on the condition and the frames,
CLIP on the frames, the optical flow on consecutive pairs, the interpolator on even
pairs) and returns plain floats (JSON-ready). A score whose network is not given (no
`flow`, no `interpolator`, no aesthetic head) is None, and the row says None too:
never zero. Aggregation is VBench's: the mean over videos of each score, and for the
dynamic degree the fraction of dynamic videos; `dynamic_score` is the mean over videos
of the per-video mean top-5 % flow (video_metrics' docstring says why both exist).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from t4a_jax.evaluation.networks import EvaluationNetworks
from t4a_jax.evaluation.video_metrics import (FrameInterpolator, OpticalFlow, aesthetic,
                                              dynamic_pair_scores, dynamic_score,
                                              i2v_subject, is_dynamic, motion_smoothness,
                                              temporal_flickering)

TABLE1_COLUMNS = ("i2v", "motion_smoothness", "temporal_flickering", "dynamic_degree",
                  "dynamic_score", "aesthetic")


def score_video(networks: EvaluationNetworks, video: np.ndarray, condition: np.ndarray, *,
                flow: OpticalFlow | None = None,
                interpolator: FrameInterpolator | None = None,
                skip_first: bool = False) -> dict[str, Any]:
    """video uint8 [T, H, W, 3], condition uint8 [H, W, 3] (the image it animates) ->
    {"i2v", "temporal_flickering", "aesthetic", "motion_smoothness", "dynamic_pairs",
    "dynamic", "dynamic_score"} (None where the network is absent)."""
    video, condition = np.asarray(video, np.uint8), np.asarray(condition, np.uint8)
    if video.ndim != 4 or condition.shape != video.shape[1:]:
        raise ValueError(f"score_video: video {video.shape} [T, H, W, 3] and condition "
                         f"{condition.shape} [H, W, 3] do not match")
    features = networks.dino_features(np.concatenate([condition[None], video]))
    result: dict[str, Any] = {
        "i2v": i2v_subject(features[0], features[1:], skip_first=skip_first),
        "temporal_flickering": temporal_flickering(video),
        "aesthetic": None, "motion_smoothness": None, "dynamic_pairs": None,
        "dynamic": None, "dynamic_score": None,
    }
    if networks.aesthetic is not None:
        weight, bias = networks.aesthetic_head()
        result["aesthetic"] = aesthetic(networks.clip_image_embeds(video), weight, bias)
    if flow is not None:
        pairs = dynamic_pair_scores(flow, video)
        result.update(dynamic_pairs=pairs, dynamic_score=dynamic_score(pairs),
                      dynamic=is_dynamic(pairs, size=video.shape[1:3],
                                         num_frames=len(video)))
    if interpolator is not None:
        result["motion_smoothness"] = motion_smoothness(interpolator, video)
    return result


def _mean(values: Sequence[Any]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def table1_row(results: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The averages over videos of `score_video` results (module docstring)."""
    if not results:
        raise ValueError("table1_row: no videos")
    row = {name: _mean([r[name] for r in results])
           for name in ("i2v", "motion_smoothness", "temporal_flickering", "dynamic_score",
                        "aesthetic")}
    row["dynamic_degree"] = _mean([None if r["dynamic"] is None else float(r["dynamic"])
                                   for r in results])
    return {name: row[name] for name in TABLE1_COLUMNS}
