"""Tests for the track cache (t4a_jax.data.tracks): grid queries, mask tests, the npz
round trip, atomic writes, validation and view/frame selection."""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import pytest

from t4a_jax.data.tracks import (TrackSet, grid_queries, load_tracks, queries_in_mask,
                                 save_tracks)

FIELDS = ("queries", "valid", "tracks", "visibility", "views", "frames")


def make_track_set(v: int = 3, f: int = 4, n: int = 5, seed: int = 0) -> TrackSet:
    rng = np.random.default_rng(seed)
    valid = rng.uniform(size=(v, n)) > 0.3
    return TrackSet(
        queries=rng.uniform(0, 64, (v, n, 2)).astype(np.float32), valid=valid,
        tracks=rng.normal(30, 20, (v, f, n, 2)).astype(np.float32),
        visibility=(rng.uniform(size=(v, f, n)) > 0.5) & valid[:, None],
        views=np.array([0, 4, 8, 12][:v], np.int32),
        frames=np.arange(f, dtype=np.int32) * 3 + 1,
        size=(64, 96), tracker="cotracker3")


def assert_same(a: TrackSet, b: TrackSet) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name
    assert a.size == b.size and a.tracker == b.tracker


# --- grid_queries ---

def test_grid_queries_256():
    q = grid_queries(256, 256)
    assert q.shape == (225, 2) and q.dtype == np.float32
    # lattice k sits at the centre of pixel floor((k + 0.5) * 256 / 15); by hand:
    centres = [8.5, 25.5, 42.5, 59.5, 76.5, 93.5, 110.5, 128.5, 145.5, 162.5, 179.5,
               196.5, 213.5, 230.5, 247.5]
    np.testing.assert_array_equal(q[:15, 0], centres)  # first row: x runs, y fixed
    np.testing.assert_array_equal(q[:15, 1], 8.5)
    np.testing.assert_array_equal(q[::15, 1], centres)  # first column: y runs
    np.testing.assert_array_equal(q[0], [8.5, 8.5])
    np.testing.assert_array_equal(q[-1], [247.5, 247.5])
    assert 256 - q[-1, 0] == q[0, 0]  # same margin on both sides
    assert set(np.diff(centres)) == {17.0, 18.0}  # spacing 256 / 15 = 17.07, in pixels
    # row-major, y outer: point i * 15 + j is (x_j, y_i)
    i, j = 4, 11
    np.testing.assert_array_equal(q[i * 15 + j], [centres[j], centres[i]])


def test_grid_queries_non_square():
    q = grid_queries(64, 128, grid=4)
    xs = [16.5, 48.5, 80.5, 112.5]  # floor((k + 0.5) * 32) + 0.5
    ys = [8.5, 24.5, 40.5, 56.5]  # floor((k + 0.5) * 16) + 0.5
    expected = [[x, y] for y in ys for x in xs]
    np.testing.assert_array_equal(q, expected)


# --- queries_in_mask ---

def test_queries_in_mask_with_leading_dims():
    mask = np.zeros((2, 4, 5), bool)  # [V=2, H=4, W=5]
    mask[0, 1, 2] = True  # view 0: row 1, col 2 -> x in [2, 3), y in [1, 2)
    mask[1, 3, 0] = True  # view 1: bottom-left pixel
    queries = np.array([
        [[2.5, 1.5], [2.0, 1.0], [1.999, 1.5], [2.5, 2.0], [0.5, 3.5]],
        [[2.5, 1.5], [0.5, 3.5], [0.0, 3.999], [1.0, 3.5], [0.5, 2.999]],
    ], np.float32)
    expected = [[True, True, False, False, False],
                [False, True, True, False, False]]
    result = queries_in_mask(queries, mask)
    assert result.dtype == np.bool_
    np.testing.assert_array_equal(result, expected)
    # two leading dims, and a non-bool mask whose nonzero pixels count as True; with
    # the views' queries swapped, each mask answers for the other view's queries
    stacked = queries_in_mask(np.stack([queries, queries[::-1]]),
                              np.stack([mask, mask]).astype(np.uint8) * 255)
    assert stacked.dtype == np.bool_
    swapped = [[True, False, False, False, False], [False, False, False, False, True]]
    np.testing.assert_array_equal(stacked, [expected, swapped])


def test_queries_outside_the_image_are_not_in_the_mask():
    mask = np.ones((4, 5), bool)
    queries = np.array([[-0.5, 1.5], [5.0, 1.5], [2.5, -0.01], [2.5, 4.0], [4.99, 3.99]])
    np.testing.assert_array_equal(queries_in_mask(queries, mask),
                                  [False, False, False, False, True])


# --- save / load ---

def test_round_trip_is_exact(tmp_path):
    tracks = make_track_set()
    path = tmp_path / "new" / "dir" / "tracks.npz"  # directories are created
    save_tracks(path, tracks)
    loaded = load_tracks(path)
    assert_same(loaded, tracks)
    assert loaded.size == (64, 96) and all(type(s) is int for s in loaded.size)
    assert loaded.tracker == "cotracker3" and type(loaded.tracker) is str
    assert_same(load_tracks(str(path)), tracks)


def test_save_leaves_no_temporary_file(tmp_path):
    save_tracks(tmp_path / "a.npz", make_track_set())
    save_tracks(tmp_path / "a.npz", make_track_set(seed=1))  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]
    assert_same(load_tracks(tmp_path / "a.npz"), make_track_set(seed=1))


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def write_half_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_tracks(tmp_path / "a.npz", make_track_set())
    assert os.listdir(tmp_path) == []
    # over an existing file: the old file stays whole
    monkeypatch.undo()
    save_tracks(tmp_path / "a.npz", make_track_set())
    monkeypatch.setattr(np, "savez_compressed", write_half_then_fail)
    with pytest.raises(OSError):
        save_tracks(tmp_path / "a.npz", make_track_set(seed=1))
    assert os.listdir(tmp_path) == ["a.npz"]
    assert_same(load_tracks(tmp_path / "a.npz"), make_track_set())


# --- validation ---

@pytest.mark.parametrize("change, message", [
    (lambda t: dict(tracks=t.tracks[..., :1]), r"tracks must be \[V, F, N, 2\]"),
    (lambda t: dict(tracks=t.tracks[0]), r"tracks must be \[V, F, N, 2\]"),
    (lambda t: dict(queries=t.queries[:, :-1]), r"queries must be floating \[3, 5, 2\]"),
    (lambda t: dict(valid=t.valid.astype(np.int32)), "valid must be bool"),
    (lambda t: dict(visibility=t.visibility[:, :-1]),
     r"visibility must be bool \[3, 4, 5\]"),
    (lambda t: dict(tracks=t.tracks.astype(np.int32)), "tracks must be floating"),
    (lambda t: dict(views=t.views[:2]), r"views must be integer \[3\]"),
    (lambda t: dict(frames=t.frames.astype(np.float32)), "frames must be integer"),
    (lambda t: dict(visibility=np.ones_like(t.visibility)),
     "visibility is True for queries that are not valid"),
    (lambda t: dict(frames=t.frames[::-1].copy()), "frames must increase"),
    (lambda t: dict(frames=np.array([1, 4, 4, 7], np.int32)), "frames must increase"),
    (lambda t: dict(size=(64,)), r"size must be \(height, width\)"),
    (lambda t: dict(size=(0, 96)), r"size must be \(height, width\)"),
    (lambda t: dict(tracker=""), "tracker name is empty"),
])
def test_track_set_validation(change, message):
    tracks = make_track_set()
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(tracks, **change(tracks))


def write_fields(path: pathlib.Path, tracks: TrackSet, **override) -> None:
    arrays = {name: getattr(tracks, name) for name in FIELDS}
    arrays.update(size=np.asarray(tracks.size, np.int32),
                  tracker=np.asarray(tracks.tracker))
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def test_load_rejects_bad_contents(tmp_path):
    tracks = make_track_set()
    write_fields(tmp_path / "missing.npz", tracks, visibility=None)
    with pytest.raises(ValueError, match=r"missing.npz: track file lacks \['visibility'\]"):
        load_tracks(tmp_path / "missing.npz")
    write_fields(tmp_path / "shape.npz", tracks, valid=tracks.valid[:, :2])
    with pytest.raises(ValueError, match=r"shape.npz: valid must be bool \[3, 5\]"):
        load_tracks(tmp_path / "shape.npz")
    write_fields(tmp_path / "size.npz", tracks, size=np.int32(64))
    with pytest.raises(ValueError, match=r"size.npz: size must be \(height, width\)"):
        load_tracks(tmp_path / "size.npz")
    write_fields(tmp_path / "invisible.npz", tracks,
                 visibility=np.ones_like(tracks.visibility))
    with pytest.raises(ValueError, match="invisible.npz: visibility is True for queries"):
        load_tracks(tmp_path / "invisible.npz")


def test_load_rejects_unreadable_files(tmp_path):
    save_tracks(tmp_path / "good.npz", make_track_set())
    good = (tmp_path / "good.npz").read_bytes()
    damaged = good[:100] + bytes(b ^ 0xFF for b in good[100:200]) + good[200:]
    files = {"garbage.npz": b"not a track file at all " * 4, "empty.npz": b"",
             "truncated.npz": good[: len(good) // 2], "damaged.npz": damaged}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "array.npy", np.zeros(3))
    np.savez(tmp_path / "objects.npz", tracker=np.array([None], dtype=object))
    for name in [*files, "array.npy", "objects.npz", "absent.npz"]:
        with pytest.raises(ValueError, match=f"{name}: not a readable track file"):
            load_tracks(tmp_path / name)


# --- select ---

def test_select_views_and_frames():
    tracks = make_track_set()  # views [0, 4, 8], frames [1, 4, 7, 10]
    part = tracks.select(views=[8, 0], frames=[4, 10])
    np.testing.assert_array_equal(part.views, [8, 0])
    np.testing.assert_array_equal(part.frames, [4, 10])
    np.testing.assert_array_equal(part.queries, tracks.queries[[2, 0]])
    np.testing.assert_array_equal(part.valid, tracks.valid[[2, 0]])
    np.testing.assert_array_equal(part.tracks, tracks.tracks[[2, 0]][:, [1, 3]])
    np.testing.assert_array_equal(part.visibility, tracks.visibility[[2, 0]][:, [1, 3]])
    assert part.size == tracks.size and part.tracker == tracks.tracker
    one = tracks.select(views=4)
    assert one.tracks.shape == (1, 4, 5, 2)
    np.testing.assert_array_equal(one.tracks[0], tracks.tracks[1])
    assert_same(tracks.select(), tracks)


def test_select_rejects_missing_views_and_frames():
    tracks = make_track_set()
    with pytest.raises(ValueError, match=r"views \[5\] are not in the track file "
                                         r"\(has \[0, 4, 8\]\)"):
        tracks.select(views=[0, 5])
    with pytest.raises(ValueError, match=r"frames \[2\] are not in the track file"):
        tracks.select(frames=[1, 2])
    with pytest.raises(ValueError, match="frames must increase"):
        tracks.select(frames=[7, 4])
