"""Tests for video writing and reading (t4a_jax.video)."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from t4a_jax import video
from t4a_jax.video import read_video, write_video


def smooth_pattern(frames: int, height: int, width: int) -> np.ndarray:
    """Float frames [F, H, W, 3] in [0.1, 0.9]: gradients that move from frame to frame."""
    t = np.arange(frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    red = 0.5 + 0.4 * np.sin(2 * np.pi * (x / width + t / frames))
    green = 0.5 + 0.4 * np.cos(2 * np.pi * y / height) + 0 * t
    blue = 0.1 + 0.8 * (x + y) / (width + height) + 0 * t
    return np.stack(np.broadcast_arrays(red, green, blue), axis=-1).astype(np.float32)


def mean_abs_error(decoded: np.ndarray, frames: np.ndarray) -> float:
    return float(np.abs(decoded / 255.0 - frames).mean())


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_mp4_round_trip_odd_size_is_padded(tmp_path, monkeypatch, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV's FFmpeg has no {codec}")
    monkeypatch.setattr(video, "_mp4_codec", lambda: codec)
    frames = smooth_pattern(7, 33, 47)
    path = tmp_path / "v.mp4"
    write_video(path, frames, fps=24)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == \
            {"libx264": "h264", "mpeg4": "mpeg4"}[codec]
    back = read_video(path)
    assert back.shape == (7, 34, 48, 3) and back.dtype == np.uint8
    assert mean_abs_error(back[:, :33, :47], frames) < 10 / 255
    # The padding replicates the last row and column.
    edge = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    assert mean_abs_error(back[:, 33], edge[:, 33]) < 10 / 255
    assert mean_abs_error(back[:, :, 47], edge[:, :, 47]) < 10 / 255
    assert os.listdir(tmp_path) == ["v.mp4"]


def test_gif_round_trip(tmp_path):
    frames = (smooth_pattern(5, 24, 31) * 255).round().astype(np.uint8)
    write_video(tmp_path / "v.GIF", frames, fps=10)
    back = read_video(tmp_path / "v.GIF")
    assert back.shape == frames.shape
    assert mean_abs_error(back, frames / 255.0) < 10 / 255


def test_float_frames_are_rounded_and_clipped(tmp_path):
    # A GIF with a few colours per frame is lossless, so the conversion shows exactly.
    values = np.array([[-0.5, 0.2, 1.7], [0.5 / 255 + 1e-4, 0.0, 1.0],
                       [0.31, 0.31, 0.31]], np.float32)
    frames = np.broadcast_to(values[:, None, None, :], (3, 4, 6, 3))
    write_video(tmp_path / "v.gif", frames)
    back = read_video(tmp_path / "v.gif")
    expected = np.array([[0, 51, 255], [1, 0, 255], [79, 79, 79]], np.uint8)
    np.testing.assert_array_equal(back, np.broadcast_to(expected[:, None, None], back.shape))


def fail_on_third_frame(monkeypatch):
    """Make the mp4 encoder raise after two frames have been encoded."""
    calls = []
    from_ndarray = av.VideoFrame.from_ndarray

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return from_ndarray(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", failing)


def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    fail_on_third_frame(monkeypatch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video(tmp_path / "v.mp4", smooth_pattern(5, 16, 16))
    assert os.listdir(tmp_path) == []


def test_failure_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "v.mp4"
    write_video(path, smooth_pattern(4, 16, 16))
    old = path.read_bytes()
    fail_on_third_frame(monkeypatch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video(path, smooth_pattern(5, 16, 16))
    assert os.listdir(tmp_path) == ["v.mp4"]
    assert path.read_bytes() == old


@pytest.mark.parametrize("name", ["v.avi", "v", "v.mp4.txt"])
def test_unknown_extension_names_the_path(tmp_path, name):
    path = str(tmp_path / name)
    with pytest.raises(ValueError, match="unknown video extension") as info:
        write_video(path, smooth_pattern(2, 8, 8))
    assert path in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("shape", [(8, 8, 3), (2, 8, 8, 4), (0, 8, 8, 3), (2, 0, 8, 3)])
def test_bad_shape_names_the_shape(tmp_path, shape):
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        write_video(tmp_path / "v.mp4", np.zeros(shape, np.float32))


def test_bad_values_raise(tmp_path):
    with pytest.raises(ValueError, match="dtype int32"):
        write_video(tmp_path / "v.gif", np.zeros((2, 8, 8, 3), np.int32))
    with pytest.raises(ValueError, match="non-finite"):
        write_video(tmp_path / "v.gif", np.full((2, 8, 8, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "v.gif", np.zeros((2, 8, 8, 3), np.uint8), fps=0)


def test_read_missing_or_undecodable_names_the_path(tmp_path):
    missing = str(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="no such file") as info:
        read_video(missing)
    assert missing in str(info.value)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 10)
    with pytest.raises(ValueError, match="cannot decode") as info:
        read_video(garbage)
    assert str(garbage) in str(info.value)
