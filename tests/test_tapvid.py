"""Tests for the TAP-Vid metrics (t4a_jax.evaluation.tapvid): hand-computed cases and a
loop-by-loop restatement of the official `compute_tapvid_metrics` definitions."""

from __future__ import annotations

import numpy as np
import pytest

from t4a_jax.data.tracks import TrackSet
from t4a_jax.evaluation.tapvid import THRESHOLDS, score_tracks, tapvid_metrics

KEYS = ({"occlusion_accuracy", "average_pts_within_thresh", "average_jaccard"}
        | {f"pts_within_{d}" for d in THRESHOLDS} | {f"jaccard_{d}" for d in THRESHOLDS})


def random_tracks(b: int, f: int, n: int, size=(256, 256), seed: int = 0):
    """gt tracks [b, f, n, 2] inside the image and a random visibility [b, f, n]."""
    rng = np.random.default_rng(seed)
    h, w = size
    tracks = rng.uniform(0, 1, (b, f, n, 2)) * np.array([w, h])
    return tracks, rng.uniform(size=(b, f, n)) > 0.3


def shifted(tracks: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return tracks + np.array([dx, dy])


def metrics_of(gt, visible, pred, pred_visible, size=(256, 256), query_frames=None, **kw):
    b, _, n, _ = gt.shape
    if query_frames is None:
        query_frames = np.zeros((b, n), np.int32)
    return tapvid_metrics(query_frames, gt, visible, pred, pred_visible, size, **kw)


def test_perfect_tracks_score_one():
    gt, visible = random_tracks(2, 5, 7)
    m = metrics_of(gt, visible, gt.copy(), visible.copy())
    assert set(m) == KEYS
    for name, value in m.items():
        np.testing.assert_array_equal(value, [1.0, 1.0], err_msg=name)


@pytest.mark.parametrize("dx, dy", [(3, 0), (0, -3), (3 / np.sqrt(2), 3 / np.sqrt(2))])
def test_three_pixel_error(dx, dy):
    # distance 3: not < 1, not < 2; < 4, < 8, < 16 -> delta_avg = 3/5.
    gt, _ = random_tracks(1, 4, 6)
    visible = np.ones(gt.shape[:-1], bool)
    m = metrics_of(gt, visible, shifted(gt, dx, dy), visible)
    expected = {1: 0.0, 2: 0.0, 4: 1.0, 8: 1.0, 16: 1.0}
    for d, value in expected.items():
        assert m[f"pts_within_{d}"][0] == value
        # all predicted visible: within -> TP, beyond -> FP and FN -> 0 / (G + G) = 0
        assert m[f"jaccard_{d}"][0] == value
    assert m["average_pts_within_thresh"][0] == pytest.approx(0.6, abs=1e-15)
    assert m["average_jaccard"][0] == pytest.approx(0.6, abs=1e-15)
    assert m["occlusion_accuracy"][0] == 1.0


def test_threshold_is_strict():
    gt, _ = random_tracks(1, 3, 4)
    visible = np.ones(gt.shape[:-1], bool)
    m = metrics_of(gt, visible, shifted(gt, 0, 4.0), visible)
    assert [m[f"pts_within_{d}"][0] for d in THRESHOLDS] == [0, 0, 0, 1, 1]


def test_flipped_occlusion():
    gt, visible = random_tracks(1, 6, 8, seed=1)
    m = metrics_of(gt, visible, gt.copy(), ~visible)
    assert m["occlusion_accuracy"][0] == 0.0
    # position accuracy ignores the predicted visibility ...
    assert m["average_pts_within_thresh"][0] == 1.0
    # ... Jaccard does not: no true positives
    assert m["average_jaccard"][0] == 0.0


def test_gt_occluded_points_do_not_count_for_position():
    gt, visible = random_tracks(1, 6, 8, seed=2)
    pred = np.where(visible[..., None], gt, gt + 100.0)  # far off where gt is occluded
    m = metrics_of(gt, visible, pred, visible)
    for name, value in m.items():
        assert value[0] == 1.0, name


def test_jaccard_by_hand():
    # One query posed at frame 0 (frame 0 is not evaluated), frames 1-5:
    #   frame  gt    pred   error  d in (1, 2)       d in (4, 8, 16)
    #   0      vis   occ    100    (query frame: excluded)
    #   1      vis   vis    0.5    TP                TP
    #   2      vis   vis    3      FP + FN           TP
    #   3      vis   occ    0      FN                FN
    #   4      occ   vis    0      FP                FP
    #   5      occ   occ    50     -                 -
    # jaccard_{1,2} = 1 / (1 TP + 2 FP + 2 FN) = 1/5; jaccard_{4,8,16} = 2 / (2 + 1 + 1)
    # = 1/2, average 1.9/5. pts_within among gt-visible frames 1-3: 2/3 for d in
    # (1, 2), 1 for the rest, average 13/15. occlusion: frames 1, 2, 5 right: 3/5.
    gt = np.full((1, 6, 1, 2), 100.0)
    error = np.array([100, 0.5, 3, 0, 0, 50])
    pred = gt + np.stack([error, 0 * error], -1)[None, :, None]
    gt_visible = np.array([1, 1, 1, 1, 0, 0], bool)[None, :, None]
    pred_visible = np.array([0, 1, 1, 0, 1, 0], bool)[None, :, None]
    m = metrics_of(gt, gt_visible, pred, pred_visible)
    expected_jaccard = {1: 1 / 5, 2: 1 / 5, 4: 1 / 2, 8: 1 / 2, 16: 1 / 2}
    expected_within = {1: 2 / 3, 2: 2 / 3, 4: 1, 8: 1, 16: 1}
    for d in THRESHOLDS:
        assert m[f"jaccard_{d}"][0] == pytest.approx(expected_jaccard[d], abs=1e-15)
        assert m[f"pts_within_{d}"][0] == pytest.approx(expected_within[d], abs=1e-15)
    assert m["average_jaccard"][0] == pytest.approx(1.9 / 5, abs=1e-15)
    assert m["average_pts_within_thresh"][0] == pytest.approx(13 / 15, abs=1e-15)
    assert m["occlusion_accuracy"][0] == pytest.approx(3 / 5, abs=1e-15)


def test_size_scaling():
    gt, visible = random_tracks(1, 5, 6, size=(256, 256), seed=3)
    at_256 = metrics_of(gt, visible, shifted(gt, 3, 0), visible, size=(256, 256))
    at_512 = metrics_of(2 * gt, visible, shifted(2 * gt, 6, 0), visible, size=(512, 512))
    assert at_256 == at_512
    assert at_512["pts_within_2"][0] == 0 and at_512["pts_within_4"][0] == 1
    # non-square: x scales by 256 / width, y by 256 / height; each error is 3 px at 256
    gt_wide = gt * np.array([2.0, 0.5])
    for dx, dy in [(6, 0), (0, 1.5)]:
        wide = metrics_of(gt_wide, visible, shifted(gt_wide, dx, dy), visible,
                          size=(128, 512))
        assert wide == at_256


def test_query_frame_exclusion():
    # queries posed at frames 0, 2, 4 of 6; everything up to and including the query
    # frame is wrong (far off, visibility flipped), every later frame perfect.
    gt, visible = random_tracks(1, 6, 3, seed=4)
    query_frames = np.array([[0, 2, 4]])
    upto_query = np.arange(6)[None, :, None] <= query_frames[:, None, :]
    pred = np.where(upto_query[..., None], gt + 50.0, gt)
    pred_visible = np.where(upto_query, ~visible, visible)
    first = metrics_of(gt, visible, pred, pred_visible, query_frames=query_frames,
                       per_track=True)
    for name, value in first.items():
        assert value.shape == (1, 3)
        np.testing.assert_array_equal(value, 1.0, err_msg=name)
    # 'strided' mode also counts frames before the query, but not the query frame
    strided = metrics_of(gt, visible, pred, pred_visible, query_frames=query_frames,
                         query_mode="strided", per_track=True)
    assert strided["occlusion_accuracy"][0, 0] == 1.0
    # 5 frames evaluated per query; frames 0, 1 resp. 0-3 wrong
    assert strided["occlusion_accuracy"][0, 1] == pytest.approx(3 / 5, abs=1e-15)
    assert strided["occlusion_accuracy"][0, 2] == pytest.approx(1 / 5, abs=1e-15)
    at_query = np.arange(6)[None, :, None] == query_frames[:, None, :]
    pred = np.where(at_query[..., None], gt + 50.0, gt)
    pred_visible = np.where(at_query, ~visible, visible)
    strided = metrics_of(gt, visible, pred, pred_visible, query_frames=query_frames,
                         query_mode="strided")
    assert all(value[0] == 1.0 for value in strided.values())


def test_nothing_to_evaluate_is_nan():
    gt, visible = random_tracks(1, 4, 2)
    m = metrics_of(gt, visible, gt, visible, query_frames=np.array([[3, 0]]),
                   per_track=True)
    assert np.isnan(m["occlusion_accuracy"][0, 0]) and m["occlusion_accuracy"][0, 1] == 1


def test_query_valid_equals_evaluating_the_subset():
    gt, visible = random_tracks(2, 6, 10, seed=5)
    rng = np.random.default_rng(5)
    pred = gt + rng.normal(scale=4.0, size=gt.shape)
    pred_visible = rng.uniform(size=visible.shape) > 0.3
    query_frames = rng.integers(0, 3, (2, 10))
    keep = rng.uniform(size=(2, 10)) > 0.4
    masked = metrics_of(gt, visible, pred, pred_visible, query_frames=query_frames,
                        query_valid=keep)
    for i in range(2):
        k = keep[i]
        clip = slice(i, i + 1)
        subset = metrics_of(gt[clip, :, k], visible[clip, :, k], pred[clip, :, k],
                            pred_visible[clip, :, k], query_frames=query_frames[clip, k])
        for name in KEYS:
            assert masked[name][i] == pytest.approx(subset[name][0], abs=1e-15), name


def official_tapvid_metrics_loops(query_points, gt_occluded, gt_tracks, pred_occluded,
                                  pred_tracks, query_mode, trackwise):
    """The definitions of `compute_tapvid_metrics` (google-deepmind/tapnet,
    tapnet/evaluation_datasets.py), restated point by point with Python loops in the
    official layout: query_points [b, n, 3] as (t, y, x), occlusion flags [b, n, t],
    tracks [b, n, t, 2] as (x, y) already in 256x256 raster coordinates.

    Evaluated: 'first' frames after the query frame, 'strided' all but the query frame.
    Per group (a video, or a track if trackwise), over evaluated points:
    occlusion_accuracy = #(pred_occ == gt_occ) / #evaluated; within d: squared distance
    < d^2; pts_within_d = #(within and gt visible) / #gt visible; jaccard_d = TP / (#gt
    visible + FP), TP = within & gt visible & pred visible, FP = pred visible & (gt
    occluded | not within); averages over d in (1, 2, 4, 8, 16).
    """
    b, n, t = gt_occluded.shape
    out = {key: np.zeros((b, n) if trackwise else (b,)) for key in KEYS}
    groups = ([((i, j), [j]) for i in range(b) for j in range(n)] if trackwise
              else [((i,), range(n)) for i in range(b)])
    for index, queries in groups:
        i = index[0]
        evaluated = agree = 0
        gt_pos = dict.fromkeys(THRESHOLDS, 0)
        correct = dict.fromkeys(THRESHOLDS, 0)
        tp = dict.fromkeys(THRESHOLDS, 0)
        fp = dict.fromkeys(THRESHOLDS, 0)
        for j in queries:
            q = int(round(float(query_points[i, j, 0])))
            for k in range(t):
                if not (k > q if query_mode == "first" else k != q):
                    continue
                evaluated += 1
                agree += bool(pred_occluded[i, j, k]) == bool(gt_occluded[i, j, k])
                vis, pvis = not gt_occluded[i, j, k], not pred_occluded[i, j, k]
                dx = float(pred_tracks[i, j, k, 0]) - float(gt_tracks[i, j, k, 0])
                dy = float(pred_tracks[i, j, k, 1]) - float(gt_tracks[i, j, k, 1])
                for d in THRESHOLDS:
                    within = dx * dx + dy * dy < d * d
                    gt_pos[d] += vis
                    correct[d] += vis and within
                    tp[d] += vis and pvis and within
                    fp[d] += pvis and (not vis or not within)
        ratio = lambda a, c: a / c if c else np.nan  # noqa: E731
        out["occlusion_accuracy"][index] = ratio(agree, evaluated)
        for d in THRESHOLDS:
            out[f"pts_within_{d}"][index] = ratio(correct[d], gt_pos[d])
            out[f"jaccard_{d}"][index] = ratio(tp[d], gt_pos[d] + fp[d])
        out["average_pts_within_thresh"][index] = np.mean(
            [out[f"pts_within_{d}"][index] for d in THRESHOLDS])
        out["average_jaccard"][index] = np.mean(
            [out[f"jaccard_{d}"][index] for d in THRESHOLDS])
    return out


@pytest.mark.parametrize("query_mode", ["first", "strided"])
@pytest.mark.parametrize("per_track", [False, True])
def test_matches_official_definitions_on_random_data(query_mode, per_track):
    b, f, n, size = 3, 10, 12, (192, 320)
    rng = np.random.default_rng(7)
    gt, visible = random_tracks(b, f, n, size=size, seed=7)
    # errors from 0.3 to 40 px so every threshold splits the points
    spread = np.exp(rng.uniform(np.log(0.3), np.log(40.0), (b, f, n, 1)))
    pred = gt + rng.normal(size=gt.shape) * spread
    pred_visible = np.where(rng.uniform(size=visible.shape) > 0.2, visible, ~visible)
    query_frames = rng.integers(0, f, (b, n))
    ours = tapvid_metrics(query_frames, gt, visible, pred, pred_visible, size,
                          query_mode=query_mode, per_track=per_track)

    to_256 = np.array([256 / size[1], 256 / size[0]])
    layout = lambda x: np.swapaxes(x, 1, 2)  # noqa: E731  [b, f, n] -> [b, n, f]
    query_points = np.stack([query_frames, rng.uniform(size=(b, n)),
                             rng.uniform(size=(b, n))], -1).astype(np.float64)
    official = official_tapvid_metrics_loops(
        query_points, layout(~visible), layout(gt * to_256), layout(~pred_visible),
        layout(pred * to_256), query_mode, per_track)
    for name in KEYS:
        assert ours[name].shape == official[name].shape
        np.testing.assert_allclose(ours[name], official[name], rtol=0, atol=1e-12,
                                   err_msg=name)
    if not per_track:  # the data really exercises every threshold
        for d in THRESHOLDS[:-1]:
            assert np.all((0 < ours[f"pts_within_{d}"]) & (ours[f"pts_within_{d}"] < 1))


@pytest.mark.parametrize("change, message", [
    (dict(pred_tracks=np.zeros((1, 3, 4, 2))), "pred_tracks must be"),
    (dict(gt_tracks=np.zeros((1, 3, 4))), r"gt_tracks must be \[B, F, N, 2\]"),
    (dict(gt_visible=np.ones((1, 3, 5), np.uint8)), "gt_visible must be bool"),
    (dict(pred_visible=np.ones((1, 2, 5), bool)), "pred_visible must be"),
    (dict(query_frames=np.zeros((1, 5))), "query_frames must be integer"),
    (dict(query_frames=np.full((1, 5), 3)), r"query_frames must lie in \[0, 3\)"),
    (dict(query_valid=np.ones((5,), bool)), "query_valid must be"),
    (dict(size=(256,)), "size must be"),
    (dict(query_mode="last"), "query_mode must be one of"),
])
def test_invalid_arguments(change, message):
    args = dict(query_frames=np.zeros((1, 5), np.int32), gt_tracks=np.zeros((1, 3, 5, 2)),
                gt_visible=np.ones((1, 3, 5), bool), pred_tracks=np.zeros((1, 3, 5, 2)),
                pred_visible=np.ones((1, 3, 5), bool), size=(256, 256))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        tapvid_metrics(**args)


# --- score_tracks over TrackSets ---

def track_set(tracks, visibility, valid=None, views=None, frames=None, size=(256, 256),
              queries=None) -> TrackSet:
    v, f, n, _ = tracks.shape
    return TrackSet(
        queries=tracks[:, 0].astype(np.float32) if queries is None else queries,
        valid=np.ones((v, n), bool) if valid is None else valid,
        tracks=tracks.astype(np.float32), visibility=visibility,
        views=np.asarray(range(v) if views is None else views, np.int32),
        frames=np.asarray(range(f) if frames is None else frames, np.int32),
        size=size, tracker="test")


def reference_set(v=3, f=5, n=6, seed=0, **kw) -> TrackSet:
    gt, visible = random_tracks(v, f, n, seed=seed)
    visible[:, 0] = True
    return track_set(np.round(gt), visible, **kw)


def test_score_tracks_perfect_and_shifted():
    ref = reference_set(frames=[3, 6, 9, 12, 15])
    scores = score_tracks(ref, ref)
    assert set(scores) == KEYS and all(isinstance(s, float) for s in scores.values())
    assert all(s == 100.0 for s in scores.values())
    moved = track_set(shifted(ref.tracks, 3, 0), ref.visibility, frames=ref.frames,
                      queries=ref.queries)
    scores = score_tracks(moved, ref)
    assert scores["average_pts_within_thresh"] == pytest.approx(60.0, abs=1e-12)
    assert scores["pts_within_2"] == 0.0 and scores["pts_within_4"] == 100.0
    assert scores["occlusion_accuracy"] == 100.0


def test_score_tracks_aligns_views():
    ref = reference_set(v=3, seed=1, views=[4, 8, 12])
    order = [2, 0, 1]
    reordered = track_set(ref.tracks[order], ref.visibility[order], views=ref.views[order],
                          queries=ref.queries[order])
    assert all(s == 100.0 for s in score_tracks(reordered, ref).values())


def test_score_tracks_query_frame_and_invalid_queries_ignored():
    ref = reference_set(v=2, n=6, seed=2)
    valid = np.ones((2, 6), bool)
    valid[0, :3] = False
    ref = track_set(ref.tracks, ref.visibility & valid[:, None], valid=valid)
    pred_tracks = ref.tracks.copy()
    pred_tracks[:, 0] += 40.0  # the query frame (frames[0]) is not evaluated
    pred_tracks[0, :, :3] += 40.0  # nor are queries invalid in the reference
    pred_visible = np.ones_like(ref.visibility)
    pred_visible[:, 1:] = ref.visibility[:, 1:] | ~valid[:, None]
    pred = track_set(pred_tracks, pred_visible, queries=ref.queries)
    assert all(s == 100.0 for s in score_tracks(pred, ref).values())


def test_score_tracks_is_a_mean_over_views():
    # view 0: 2 valid queries, perfect; view 1: 4 valid queries, 3 px off; view 2: no
    # valid query (skipped). Mean over views: (100 + 60) / 2 = 80 (pooling all points
    # would give (2 * 100 + 4 * 60) / 6 = 73.3).
    ref = reference_set(v=3, n=4, seed=3)
    valid = np.zeros((3, 4), bool)
    valid[0, :2] = valid[1] = True
    visible = np.broadcast_to(valid[:, None], ref.visibility.shape)
    ref = track_set(ref.tracks, visible, valid=valid)
    pred_tracks = ref.tracks.copy()
    pred_tracks[1] += np.array([0, 3.0], np.float32)
    pred = track_set(pred_tracks, visible, valid=valid, queries=ref.queries)
    scores = score_tracks(pred, ref)
    assert scores["average_pts_within_thresh"] == pytest.approx(80.0, abs=1e-12)
    assert scores["occlusion_accuracy"] == 100.0


def test_score_tracks_mismatches():
    ref = reference_set(v=3, f=5, seed=4, views=[0, 1, 2], frames=[0, 3, 6, 9, 12])
    fewer_views = ref.select(views=[0, 2])
    with pytest.raises(ValueError, match=r"different views: predicted lacks \[1\]"):
        score_tracks(fewer_views, ref)
    with pytest.raises(ValueError, match=r"different frames: predicted lacks \[\], has "
                                         r"extra \[12\]"):
        score_tracks(ref, ref.select(frames=[0, 3, 6, 9]))
    other_size = track_set(ref.tracks, ref.visibility, frames=ref.frames, size=(256, 512))
    with pytest.raises(ValueError, match=r"\(256, 512\) \(H, W\) frame"):
        score_tracks(other_size, ref)
    other_queries = track_set(ref.tracks, ref.visibility, frames=ref.frames,
                              queries=ref.queries + 1.0)
    with pytest.raises(ValueError, match="different query points"):
        score_tracks(other_queries, ref)
