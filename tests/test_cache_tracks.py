"""`tools/cache_tracks.py` on a tiny synthetic set (`t4a_jax.data.synthetic`: 2 objects,
4 views, 6 frames, 32 x 32, exact tracks and mask files).

CoTracker3 runs in two ways: a fake `cotracker` package injected in `sys.modules` whose
predictor checks the input contract and answers a known motion (runs everywhere), and
the real package at random weights where it is installed (it is not on PyPI; skipped
otherwise).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from t4a_jax.data import synthetic
from t4a_jax.data.mvvideo import background_masks, read_index
from t4a_jax.data.tracks import grid_queries, load_tracks, queries_in_mask, save_tracks
from t4a_jax.video import read_video
from tools import cache_tracks
from tools.cache_tracks import CoTracker3, FrameRange, Options, track_item

from fake_cotracker import SHIFT, FakePredictor, install_fake_cotracker

SIZE, VIEWS, FRAMES = 32, 4, 6
ITEMS = ("synth_0000/anim_0", "synth_0001/anim_0")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("synthetic"))
    synthetic.generate_dataset(root, 2, synthetic.DatasetSpec(
        views=VIEWS, frames=FRAMES, size=SIZE, num_gaussians=1024))
    return root


@pytest.fixture
def root(synthetic_root, tmp_path) -> str:
    """A private copy of the synthetic set, free to damage."""
    return shutil.copytree(synthetic_root, str(tmp_path / "data"))


def exact(root: str, name: str):
    return load_tracks(os.path.join(root, "exact_tracks", f"{name}.npz"))


def cached(out: str, name: str):
    return load_tracks(os.path.join(out, f"{name}.npz"))


# ------------------------------------------------------------------------- fake CoTracker


@pytest.fixture
def fake_cotracker(monkeypatch, tmp_path) -> str:
    """Installs the fake package; returns a checkpoint path for `--checkpoint`."""
    return install_fake_cotracker(monkeypatch, tmp_path)


def run_cotracker(root: str, checkpoint: str, *extra: str) -> int:
    return cache_tracks.main(["--root", root, "--tracker", "cotracker3", "--checkpoint",
                              checkpoint, "--device", "cpu", "--size", str(SIZE), *extra])


# ------------------------------------------------------------------------------ oracle


@pytest.mark.parametrize("extra, views, frames", [
    ((), [0, 1, 2, 3], list(range(FRAMES))),
    (("--views", "3,1", "--frames", "0:5:2"), [3, 1], [0, 2, 4]),
])
def test_oracle_copies_exact_tracks_rescaled_and_scores_100(root, capsys, extra, views,
                                                            frames):
    out = os.path.join(root, "oracle")
    status = cache_tracks.main(["--root", root, "--tracker", "oracle", "--size", "64",
                                "--out", out, "--score", *extra])
    assert status == 0
    for name in ITEMS:
        reference, copy = exact(root, name).select(views, frames), cached(out, name)
        assert copy.tracker == "oracle" and copy.size == (64, 64)
        np.testing.assert_array_equal(copy.views, views)
        np.testing.assert_array_equal(copy.frames, frames)
        np.testing.assert_allclose(copy.queries, 2 * reference.queries, rtol=0, atol=1e-5)
        np.testing.assert_allclose(copy.tracks, 2 * reference.tracks, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(copy.valid, reference.valid)
        np.testing.assert_array_equal(copy.visibility, reference.visibility)
    table = capsys.readouterr().out
    assert "2 written, 0 skipped (finished), 0 failed" in table
    row = next(line for line in table.splitlines() if line.startswith("oracle"))
    assert row.split()[1:] == ["2", "100.00", "100.00", "100.00"]


def test_oracle_needs_frames_from_frame_0(root, capsys):
    assert cache_tracks.main(["--root", root, "--tracker", "oracle", "--frames", "1:"]) == 1
    err = capsys.readouterr().err
    assert "exact queries are on frame 0, --frames starts at 1" in err


# ---------------------------------------------------------------------- resume, failures


def test_resumes_and_overwrites(root, capsys):
    out = os.path.join(root, "tracks")
    base = ["--root", root, "--tracker", "oracle", "--size", str(SIZE)]
    assert cache_tracks.main(base + ["--uids", "synth_0001"]) == 0
    assert sorted(os.listdir(out)) == ["synth_0001"]
    path = os.path.join(out, f"{ITEMS[1]}.npz")
    os.utime(path, (0, 0))
    assert cache_tracks.main(base) == 0
    assert os.path.getmtime(path) == 0, "a finished item was redone"
    assert "1 written, 1 skipped (finished), 0 failed" in capsys.readouterr().out
    assert cache_tracks.main(base + ["--overwrite", "--limit", "1"]) == 0
    assert "1 written, 0 skipped" in capsys.readouterr().out
    assert cache_tracks.main(base + ["--overwrite"]) == 0
    assert os.path.getmtime(path) > 0
    assert "2 written, 0 skipped" in capsys.readouterr().out
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp-" in f]
    # A finished file of another size is not silently kept.
    assert cache_tracks.main(base[:-1] + ["64"]) == 1
    assert "holds 'oracle' tracks at (32, 32), this run makes 'oracle' at (64, 64)" \
        in capsys.readouterr().out


def test_bad_video_fails_its_item_only(root, fake_cotracker, capsys):
    bad = os.path.join(root, "videos", "synth_0001", "anim_0", "view_2.mp4")
    with open(bad, "wb") as file:
        file.write(b"not a video")
    assert run_cotracker(root, fake_cotracker) == 1
    captured = capsys.readouterr()
    assert "1 written, 0 skipped (finished), 1 failed" in captured.out
    assert f"failed {ITEMS[1]}: " in captured.out and bad in captured.out
    assert os.path.exists(os.path.join(root, "tracks", f"{ITEMS[0]}.npz"))
    assert not os.path.exists(os.path.join(root, "tracks", f"{ITEMS[1]}.npz"))
    assert run_cotracker(root, fake_cotracker) == 1
    assert "0 written, 1 skipped (finished), 1 failed" in capsys.readouterr().out


def test_missing_cotracker_is_a_clear_error(root, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "cotracker", None)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", None)
    assert run_cotracker(root, str(tmp_path / "absent.pth")) == 2
    err = capsys.readouterr().err
    assert "needs the `cotracker` package" in err
    assert "github.com/facebookresearch/co-tracker" in err
    assert not os.path.exists(os.path.join(root, "tracks"))


# ------------------------------------------------------------------ CoTracker3 integration


def test_cotracker_contract_pixels_and_masks(root, fake_cotracker):
    """Inputs as CoTracker3 wants them, +0.5 pixel conversion both ways, queries only
    where the mask is: the mask file, else the background, an empty mask none at all."""
    name = ITEMS[0]
    masks = os.path.join(root, "masks", name)
    os.remove(os.path.join(masks, "view_0.npz"))                       # background
    np.savez(os.path.join(masks, "view_1.npz"), mask=np.zeros((FRAMES, SIZE, SIZE), bool))
    torch.manual_seed(123)
    expected_rng = torch.random.get_rng_state()

    assert run_cotracker(root, fake_cotracker, "--uids", "synth_0000") == 0
    assert torch.equal(torch.random.get_rng_state(), expected_rng)
    tracks, truth = cached(os.path.join(root, "tracks"), name), exact(root, name)
    grid = grid_queries(SIZE, SIZE)
    frame0 = read_video(os.path.join(root, "videos", name, "view_0.mp4"))[0]
    expected_valid = np.stack([queries_in_mask(grid, background_masks(frame0, 0.05)),
                               np.zeros(len(grid), bool), truth.valid[2], truth.valid[3]])
    assert tracks.tracker == "cotracker3" and tracks.size == (SIZE, SIZE)
    np.testing.assert_array_equal(tracks.valid, expected_valid)
    assert 0 < expected_valid[0].sum() < len(grid)

    # Called once per view with a valid query, with exactly those queries at -0.5.
    calls = FakePredictor.calls
    assert [shape for shape, _ in calls] == [(1, FRAMES, 3, SIZE, SIZE)] * 3
    for (_, queries), view in zip(calls, (0, 2, 3)):
        np.testing.assert_allclose(queries, grid[expected_valid[view]] - 0.5, atol=1e-6)
    # Tracks come back +0.5 where valid; invalid queries stay put, unseen.
    motion = np.arange(FRAMES)[:, None, None] * SHIFT
    expected_tracks = np.where(expected_valid[:, None, :, None], grid + motion, grid)
    np.testing.assert_allclose(tracks.tracks, expected_tracks, rtol=0, atol=1e-5)
    seen = np.broadcast_to(expected_valid[:, None], tracks.visibility.shape)
    np.testing.assert_array_equal(tracks.visibility, seen)


cotracker_installed = pytest.mark.skipif(
    importlib.util.find_spec("cotracker") is None,
    reason="the cotracker package (CoTracker3, not on PyPI) is not installed")


@cotracker_installed
def test_real_cotracker3_at_random_weights(synthetic_root, monkeypatch, tmp_path):
    """The installed CoTracker3 offline at random weights on 1 view x 6 frames: shapes,
    the track file format, the query frame answering the query (the pixel conversion
    round trip), and torch's generator untouched by its import (which reseeds it)."""
    for module in [m for m in sys.modules if m.split(".")[0] == "cotracker"]:
        monkeypatch.delitem(sys.modules, module)  # so that the import runs again
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tracker = CoTracker3(checkpoint=None, device="cpu")
    assert "cotracker.models.core.cotracker.cotracker3_offline" in sys.modules
    assert torch.equal(torch.rand(3), expected), "torch's generator was changed"

    item = read_index(synthetic_root)[0][0]
    options = Options(synthetic_root, views=(1,), frames=FrameRange(), size=SIZE)
    tracks = track_item(options, item, tracker)
    path = str(tmp_path / "tracks.npz")
    save_tracks(path, tracks)
    tracks = load_tracks(path)
    assert tracks.tracks.shape == (1, FRAMES, 225, 2) and tracks.tracks.dtype == np.float32
    assert tracks.visibility.shape == (1, FRAMES, 225) and tracks.tracker == "cotracker3"
    valid = tracks.valid[0]
    np.testing.assert_array_equal(valid, exact(synthetic_root, ITEMS[0]).valid[1])
    assert np.all(np.isfinite(tracks.tracks))
    np.testing.assert_allclose(tracks.tracks[0, 0, valid], tracks.queries[0, valid],
                               rtol=0, atol=1e-3)
    assert tracks.visibility[0, 0, valid].all()
    assert not tracks.visibility[0][:, ~valid].any()


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("text, frames", [
    ("", [0, 1, 2, 3, 4, 5]), ("::2", [0, 2, 4]), ("1:4", [1, 2, 3]), ("2::3", [2, 5])])
def test_frame_ranges(text, frames):
    np.testing.assert_array_equal(FrameRange.parse(text).resolve(6), frames)


@pytest.mark.parametrize("text", ["a", "1:2:3:4", "3:3", "::0", "-1:"])
def test_bad_frame_ranges(text):
    with pytest.raises(argparse.ArgumentTypeError, match="--frames"):
        FrameRange.parse(text)


def test_frames_beyond_the_video(root, fake_cotracker, capsys):
    with pytest.raises(ValueError, match="6 frames, --frames needs frame 7"):
        FrameRange.parse("0:8").resolve(6)
    assert run_cotracker(root, fake_cotracker, "--frames", "0:8") == 1
    out = capsys.readouterr().out
    assert "0 written, 0 skipped (finished), 2 failed" in out
    assert f"failed {ITEMS[0]}: ValueError: view 0: 6 frames, --frames needs frame 7" in out
