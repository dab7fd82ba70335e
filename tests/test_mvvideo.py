"""Tests for the MV-Video reader (t4a_jax.data.mvvideo) on small generated data sets.

The test videos encode what they show: every view video is a grey background with a
centred square whose red channel is 20 + 15 * frame and green channel 30 + 20 * view,
so a decoded example tells which view and which frame each image came from.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from t4a_jax.data.mvvideo import (Clip, DataWarning, MVVideoConfig, SkippedItem,
                                  background_masks, choose_clip, load_example, read_index)
from t4a_jax.data.tracks import TrackSet, save_tracks
from t4a_jax.video import write_video

VIDEO_SIZE, VIDEO_FRAMES, VIEWS_ALL = 32, 12, 8
BACKGROUND = 128
SQUARE = slice(8, 24)  # the object, in video pixels


def view_video(view: int, frames: int = VIDEO_FRAMES) -> np.ndarray:
    """uint8 [frames, 32, 32, 3]: the coded square on the grey background."""
    video = np.full((frames, VIDEO_SIZE, VIDEO_SIZE, 3), BACKGROUND, np.uint8)
    video[:, SQUARE, SQUARE, 0] = (20 + 15 * np.arange(frames))[:, None, None]
    video[:, SQUARE, SQUARE, 1] = 30 + 20 * view
    video[:, SQUARE, SQUARE, 2] = 60
    return video


def make_dataset(root, uids, *, anim="walk", views=VIEWS_ALL, frames=VIDEO_FRAMES,
                 elevation=15.0) -> str:
    """Write videos and the index for `uids` (item u has azimuth start 10 u + 5)."""
    root = str(root)
    info = {}
    for u, uid in enumerate(uids):
        info[uid] = {anim: {"00": {"angle": {"elv": elevation, "azi_start": 10.0 * u + 5},
                                   "text_prompt": f"a {uid} walks"}}}
        folder = os.path.join(root, "videos", uid, anim)
        os.makedirs(folder, exist_ok=True)
        for view in range(views):
            write_video(os.path.join(folder, f"view_{view}.mp4"), view_video(view, frames))
    with open(os.path.join(root, "uid_info_dict.json"), "w") as file:
        json.dump(info, file)
    return root


def small_config(root, **overrides) -> MVVideoConfig:
    """4 views, 4 frames with stride 3 and a start in 0..2, at 16 x 16, no tracks."""
    settings = dict(size=16, num_views=4, num_frames=4, frame_stride=3, max_start=2,
                    num_queries=9, tracks_dir=None)
    return MVVideoConfig(str(root), **{**settings, **overrides})


def decoded_codes(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(view [V, F], frame [V, F]) read back from the square's colour of example frames."""
    centre = np.rint((frames[:, :, 8, 8] + 1.0) * 127.5)
    return np.rint((centre[..., 1] - 30) / 20), np.rint((centre[..., 0] - 20) / 15)


def camera_angles(cameras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(elevation, azimuth) in degrees of camera vectors [V, 16] (row-major 4x4 c2w)."""
    position = cameras.reshape(-1, 4, 4)[:, :3, 3]
    elevation = np.degrees(np.arcsin(position[:, 2] / np.linalg.norm(position, axis=-1)))
    return elevation, np.degrees(np.arctan2(position[:, 1], position[:, 0]))


def angle_difference(a, b):
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("mvvideo"), ["cat", "dog"])


def test_example_has_the_documented_fields(dataset):
    config = small_config(dataset)
    items, refused = read_index(dataset)
    assert [(i.uid, i.anim, i.num_views, i.index) for i in items] == \
        [("cat", "walk", 8, 0), ("dog", "walk", 8, 1)] and refused == []
    item = items[1]
    example = load_example(item, choose_clip(item, config, np.random.default_rng(0)), config)
    expected = {"frames": ((4, 4, 16, 16, 3), np.float32), "cameras": ((4, 16), np.float32),
                "masks": ((4, 4, 16, 16), np.bool_), "tracks": ((4, 4, 9, 2), np.float32),
                "visibility": ((4, 4, 9), np.bool_), "queries": ((4, 9, 2), np.float32),
                "query_valid": ((4, 9), np.bool_), "views": ((4,), np.int32),
                "frame_indices": ((4,), np.int32), "index": ((), np.int32)}
    for name, (shape, dtype) in expected.items():
        assert np.shape(example[name]) == shape and np.asarray(example[name]).dtype == dtype, \
            name
    assert (example["uid"], example["anim"], example["prompt"], example["index"]) == \
        ("dog", "walk", "a dog walks", 1)
    frames = example["frames"]
    assert frames.min() >= -1.0 and frames.max() <= 1.0
    # Background grey 128 -> 128 / 127.5 - 1 at the corners.
    np.testing.assert_allclose(frames[:, :, 0, 0], BACKGROUND / 127.5 - 1, atol=0.02)


def test_views_are_90_degrees_apart_and_frames_have_stride_3(dataset):
    config = small_config(dataset)
    item = read_index(dataset)[0][1]
    starts, firsts = set(), set()
    for seed in range(12):
        clip = choose_clip(item, config, np.random.default_rng(seed))
        example = load_example(item, clip, config)
        first, start = int(clip.views[0]), int(clip.frames[0])
        firsts.add(first)
        starts.add(start)
        np.testing.assert_array_equal(example["views"], first + 2 * np.arange(4))
        np.testing.assert_array_equal(example["frame_indices"], start + 3 * np.arange(4))
        # The pixels come from those views and frames.
        views, frames = decoded_codes(example["frames"])
        np.testing.assert_array_equal(views, np.repeat(example["views"][:, None], 4, 1))
        np.testing.assert_array_equal(frames, np.repeat(example["frame_indices"][None], 4, 0))
        # Cameras: on the orbit at the item's elevation, 90 degrees apart in azimuth,
        # view i at azi_start + 360 i / 8.
        elevation, azimuth = camera_angles(example["cameras"])
        np.testing.assert_allclose(elevation, item.elevation, atol=1e-3)
        np.testing.assert_allclose(angle_difference(np.roll(azimuth, -1), azimuth)[:3], 90.0,
                                   atol=1e-3)
        np.testing.assert_allclose(
            angle_difference(azimuth, item.azimuth_start + 45.0 * example["views"]), 0.0,
            atol=1e-3)
        np.testing.assert_allclose(
            np.linalg.norm(example["cameras"].reshape(-1, 4, 4)[:, :3, 3], axis=-1), 1.0,
            rtol=1e-5)
    assert starts == {0, 1, 2} and firsts == {0, 1}


def test_masks_come_from_mask_files_or_the_background(dataset, tmp_path):
    root = make_dataset(tmp_path, ["cat"])
    left_half = np.zeros((VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SIZE), bool)
    left_half[:, :, :VIDEO_SIZE // 2] = True
    os.makedirs(os.path.join(root, "masks", "cat", "walk"))
    np.savez(os.path.join(root, "masks", "cat", "walk", "view_2.npz"), mask=left_half)
    config = small_config(root)
    item = read_index(root)[0][0]
    clip = Clip(np.array([0, 2, 4, 6], np.int32), np.array([1, 4, 7, 10], np.int32))
    masks = load_example(item, clip, config)["masks"]
    # View 2 has a mask file: exactly its left half after the area resize.
    expected_file = np.zeros((4, 16, 16), bool)
    expected_file[..., :8] = True
    np.testing.assert_array_equal(masks[1], expected_file)
    # The others: the square [4, 12)^2 from the background, up to codec noise in the
    # one-pixel band around its edge.
    band = np.zeros((16, 16), bool)
    band[3:13, 3:13] = True
    band[5:11, 5:11] = False
    square = np.zeros((16, 16), bool)
    square[4:12, 4:12] = True
    for view in (0, 2, 3):
        np.testing.assert_array_equal(masks[view][:, ~band],
                                      np.broadcast_to(square[~band], (4, (~band).sum())))
        assert (masks[view] == square).mean() > 0.97


def test_background_mask_uses_the_border_median_and_the_threshold():
    image = np.full((1, 10, 12, 3), 200, np.uint8)
    image[0, 0, :3] = 0            # an object touching the border does not move the median
    image[0, 4:6, 5:8] = (200, 200, 180)   # 20 / 255 = 0.078 away in blue
    image[0, 7, 2] = (205, 195, 200)       # 5 / 255 = 0.02 away: background
    expected = np.zeros((1, 10, 12), bool)
    expected[0, 0, :3] = True
    expected[0, 4:6, 5:8] = True
    np.testing.assert_array_equal(background_masks(image, 0.05), expected)
    expected[0, 4:6, 5:8] = False
    np.testing.assert_array_equal(background_masks(image, 0.1), expected)


def full_track_set(rng, size=(64, 32), tracker="exact", num_queries=9) -> TrackSet:
    """Known tracks over all views and frames, with random validity and visibility."""
    shape = (VIEWS_ALL, VIDEO_FRAMES, num_queries)
    tracks = rng.uniform(0, 32, shape + (2,)).astype(np.float32)
    valid = rng.random((VIEWS_ALL, num_queries)) < 0.7
    visibility = (rng.random(shape) < 0.8) & valid[:, None]
    return TrackSet(queries=tracks[:, 0].copy(), valid=valid, tracks=tracks,
                    visibility=visibility, views=np.arange(VIEWS_ALL, dtype=np.int32),
                    frames=np.arange(VIDEO_FRAMES, dtype=np.int32), size=size,
                    tracker=tracker)


def test_tracks_are_selected_and_rescaled(dataset, tmp_path):
    stored = full_track_set(np.random.default_rng(0), size=(64, 32))
    save_tracks(tmp_path / "cat" / "walk.npz", stored)
    config = small_config(dataset, tracks_dir=str(tmp_path))
    item = read_index(dataset)[0][0]
    clip = Clip(np.array([1, 3, 5, 7], np.int32), np.array([2, 5, 8, 11], np.int32))
    example = load_example(item, clip, config)
    # Track pixels (64 high, 32 wide) -> 16 x 16: x / 2, y / 4.
    expected = stored.tracks[1::2][:, 2::3] * np.array([0.5, 0.25], np.float32)
    np.testing.assert_allclose(example["tracks"], expected, rtol=1e-6)
    np.testing.assert_array_equal(example["visibility"], stored.visibility[1::2][:, 2::3])
    # Queries: the points tracked to the clip's first frame (2), valid where the stored
    # query is valid and visible there.
    np.testing.assert_allclose(example["queries"], expected[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(example["query_valid"],
                                  stored.valid[1::2] & stored.visibility[1::2, 2])
    assert 0 < example["query_valid"].sum() < example["query_valid"].size


def test_without_tracks_the_track_fields_are_static_and_invalid(dataset):
    config = small_config(dataset, tracks_dir=None)
    item = read_index(dataset)[0][0]
    example = load_example(item, choose_clip(item, config, np.random.default_rng(1)), config)
    assert not example["query_valid"].any() and not example["visibility"].any()
    assert not example["tracks"].any() and not example["queries"].any()


def test_missing_track_files_skip_or_raise_or_fall_back_to_exact_tracks(dataset, tmp_path):
    item = read_index(dataset)[0][0]
    clip = Clip(np.array([0, 2, 4, 6], np.int32), np.array([0, 3, 6, 9], np.int32))
    missing = os.path.join(str(tmp_path), "cache", "cat", "walk.npz")
    with pytest.raises(SkippedItem, match=missing) as error:
        load_example(item, clip, small_config(dataset, tracks_dir=str(tmp_path / "cache")))
    assert error.value.kind == "missing_tracks" and error.value.path == missing
    with pytest.raises(ValueError, match=missing) as error:
        load_example(item, clip, small_config(dataset, tracks_dir=str(tmp_path / "cache"),
                                              missing_tracks="error"))
    assert not isinstance(error.value, SkippedItem)

    # The exact tracks are read only when asked for, and only where the cache has none.
    exact = os.path.join(dataset, "exact_tracks", "cat", "walk.npz")
    stored = full_track_set(np.random.default_rng(2), size=(32, 32))
    save_tracks(exact, stored)
    try:
        with pytest.raises(SkippedItem, match=missing):
            load_example(item, clip, small_config(dataset, tracks_dir=str(tmp_path / "cache")))
        example = load_example(item, clip, small_config(
            dataset, tracks_dir=str(tmp_path / "cache"), exact_tracks_fallback=True))
        np.testing.assert_allclose(example["tracks"], stored.tracks[::2][:, ::3] / 2)
        # A track file with another number of queries is a bad file.
        with pytest.raises(SkippedItem, match="expected num_queries=16") as error:
            load_example(item, clip, small_config(dataset, tracks_dir="exact_tracks",
                                                  num_queries=16))
        assert error.value.kind == "bad_tracks"
    finally:
        os.remove(exact)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "short", "missing"])
def test_a_bad_video_is_a_skipped_item_naming_the_file(tmp_path, damage):
    root = make_dataset(tmp_path, ["cat"], views=4)
    path = os.path.join(root, "videos", "cat", "walk", "view_2.mp4")
    if damage == "truncated":
        with open(path, "rb") as file:
            data = file.read()
        with open(path, "wb") as file:
            file.write(data[:len(data) // 2])
    elif damage == "garbage":
        with open(path, "wb") as file:
            file.write(os.urandom(2000))
    elif damage == "short":   # decodes, but has fewer frames than the clip needs
        write_video(path, view_video(2, frames=6))
    config = small_config(root, num_views=4)
    item = read_index(root, num_views=4)[0][0]
    if damage == "missing":   # gone after the index was read
        os.remove(path)
    clip = Clip(np.arange(4, dtype=np.int32), np.array([0, 3, 6, 9], np.int32))
    with pytest.raises(SkippedItem, match=path) as error:
        load_example(item, clip, config)
    assert error.value.kind == "videos"
    if damage == "short":
        assert "6 frames, the clip needs 12" in str(error.value)


def test_unusable_index_is_an_immediate_error_naming_the_file(tmp_path):
    path = os.path.join(str(tmp_path), "uid_info_dict.json")
    with pytest.raises(ValueError, match=f"{path}: cannot read"):
        read_index(tmp_path)
    with open(path, "w") as file:
        file.write("{not json")
    with pytest.raises(ValueError, match=f"{path}: cannot read"):
        read_index(tmp_path)
    with open(path, "w") as file:
        json.dump({"cat": {"walk": {"00": {"angle": {"elv": 0, "azi_start": 0},
                                           "text_prompt": "x"}}}}, file)
    with pytest.raises(ValueError, match=f"{path}: no usable item"):
        read_index(tmp_path)     # no video folder
    with open(path, "w") as file:
        json.dump({"cat": {"walk": {"00": {"angle": {"elv": 0}, "text_prompt": "x"}}}}, file)
    os.makedirs(os.path.join(str(tmp_path), "videos", "cat", "walk"))
    with pytest.raises(ValueError, match=r"entry \['cat'\]\['walk'\] must hold"):
        read_index(tmp_path)


def test_items_whose_view_count_is_not_a_multiple_of_4_are_refused(tmp_path):
    root = make_dataset(tmp_path, ["cat", "dog"], views=4)
    for view in (4, 5):
        write_video(os.path.join(root, "videos", "dog", "walk", f"view_{view}.mp4"),
                    view_video(view))
    with pytest.warns(DataWarning, match=os.path.join(root, "videos", "dog", "walk")):
        items, refused = read_index(root)
    assert [item.uid for item in items] == ["cat"] and len(refused) == 1
    assert "6 views, not a positive multiple of 4" in refused[0]
