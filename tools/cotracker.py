"""CoTracker3 (Karaev et al. 2024) offline as a point tracker of one video, through the
`cotracker` package when it is installed (it is not on PyPI; torch is imported only when
a tracker is made).

    tracker = CoTracker3("scaled_offline.pth", device="cuda")
    tracks, visibility = tracker(video, queries)     # [F, N, 2], [F, N]

Used by `tools/cache_tracks.py` (training track caches); it is a
`t4a_jax.tracking.video_tracker.VideoTracker`, which `t4a_jax.export.tracks.video_tracks`
takes. It lives in tools/ because `import t4a_jax` never imports torch.
"""

from __future__ import annotations

import os

import numpy as np

# CoTracker3 offline as released (`scaled_offline.pth`; the repository's hubconf builds
# `cotracker3_offline` with the same arguments).
COTRACKER3_OFFLINE = dict(offline=True, v2=False, window_len=60)
COTRACKER3_WEIGHTS = ("https://huggingface.co/facebook/cotracker3/resolve/main/"
                      "scaled_offline.pth")


class CoTracker3:
    """CoTracker3 offline as a `VideoTracker`.

    The predictor (checked in facebookresearch/co-tracker, `cotracker/predictor.py`,
    version 3.0.0) takes video float [1, F, 3, H, W] in 0-255 and queries [1, N, 3] as
    (t, x, y), resizes to its 384 x 512 with `align_corners=True` and scales coordinates
    by (size' - 1) / (size - 1): its pixel centres sit at integers. Ours sit at +0.5, so
    queries go in at -0.5 and tracks come back +0.5. It adds its own 6x6 support grid,
    thresholds visibility at 0.9 and sets the query frame's point to the query.
    `checkpoint=None` builds random weights (tests).
    """

    name = "cotracker3"

    def __init__(self, checkpoint: str | None, device: str | None = None):
        # torch is imported here: the oracle and scoring run without it.
        import torch

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with _keep_torch_rng(torch):
            predictor = _import_predictor()
            if checkpoint is not None and not os.path.isfile(checkpoint):
                raise ValueError(f"{checkpoint}: no such CoTracker3 checkpoint (download "
                                 f"{COTRACKER3_WEIGHTS})")
            self.predictor = predictor(checkpoint=checkpoint, **COTRACKER3_OFFLINE)
        self.predictor = self.predictor.to(self.device)

    def __call__(self, video: np.ndarray, queries: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        frames = torch.from_numpy(video).to(self.device).permute(0, 3, 1, 2)[None].float()
        points = np.concatenate([np.zeros((len(queries), 1)), queries - 0.5], axis=1)
        points = torch.from_numpy(points[None].astype(np.float32)).to(self.device)
        tracks, visibility = self.predictor(frames, queries=points)
        return (tracks[0].cpu().numpy().astype(np.float32) + 0.5,
                visibility[0].cpu().numpy().astype(bool))


def _import_predictor() -> type:
    """`cotracker.predictor.CoTrackerPredictor`, or an ImportError saying how to get it."""
    try:
        from cotracker.predictor import CoTrackerPredictor
    except ImportError as e:
        raise ImportError(
            f"CoTracker3 needs the `cotracker` package, which is not on PyPI: "
            f"git clone https://github.com/facebookresearch/co-tracker && pip install "
            f"./co-tracker; weights: {COTRACKER3_WEIGHTS} ({e})") from e
    return CoTrackerPredictor


def _keep_torch_rng(torch):
    """A context that restores torch's CPU and CUDA generators on exit."""
    return torch.random.fork_rng(devices=range(torch.cuda.device_count()))
