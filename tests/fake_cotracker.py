"""A stand-in `cotracker` package for tests: its predictor checks CoTracker3's input
contract and answers a known motion (the real package is not on PyPI)."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import torch

SHIFT = np.array([1.25, -0.5], np.float32)  # the fake's motion per frame, in pixels


class FakePredictor:
    """Mimics `cotracker.predictor.CoTrackerPredictor` (integer pixel centres): every
    query moves by SHIFT per frame and is always visible. Checks what it is given."""

    calls: list[tuple[tuple[int, ...], np.ndarray]] = []

    def __init__(self, checkpoint, offline, v2, window_len):
        assert (offline, v2, window_len) == (True, False, 60)
        assert os.path.isfile(checkpoint)
        torch.manual_seed(0)  # as importing the real package does

    def to(self, device):
        assert device == "cpu"
        return self

    def __call__(self, video, queries):
        assert video.dtype == torch.float32 and video.ndim == 5 and video.shape[0] == 1
        assert video.shape[2] == 3, "channels first"
        assert 0 <= video.min() and video.max() <= 255 and video.max() > 1, "0-255"
        assert queries.dtype == torch.float32 and queries.shape[0] == 1
        assert queries.shape[2] == 3 and bool(torch.all(queries[..., 0] == 0))
        FakePredictor.calls.append((tuple(video.shape), queries[0, :, 1:].numpy().copy()))
        t = torch.arange(video.shape[1], dtype=torch.float32)[None, :, None, None]
        tracks = queries[:, None, :, 1:] + t * torch.from_numpy(SHIFT)
        return tracks, torch.ones(tracks.shape[:3], dtype=torch.bool)


def install_fake_cotracker(monkeypatch, tmp_path) -> str:
    """Put the fake package in `sys.modules` (undone by `monkeypatch`); returns a
    checkpoint file to pass where CoTracker3 wants one."""
    package = types.ModuleType("cotracker")
    predictor = types.ModuleType("cotracker.predictor")
    predictor.CoTrackerPredictor = FakePredictor
    package.predictor = predictor
    monkeypatch.setitem(sys.modules, "cotracker", package)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", predictor)
    FakePredictor.calls = []
    checkpoint = tmp_path / "scaled_offline.pth"
    checkpoint.write_bytes(b"fake")
    return str(checkpoint)
