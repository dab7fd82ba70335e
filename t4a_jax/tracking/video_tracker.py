"""The interface of a point tracker of one video (CoTracker3 in `tools/cotracker.py`,
which needs torch and the `cotracker` package; `t4a_jax` itself stays torch-free)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class VideoTracker(Protocol):
    """Tracks points through one view's frames.

    `video` uint8 [F, S, S, 3] RGB; `queries` float32 [N, 2] (x, y) on frame 0 in pixels,
    centres at +0.5. Returns tracks float32 [F, N, 2] in the same pixels and
    visibility bool [F, N].
    """

    name: str

    def __call__(self, video: np.ndarray, queries: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]: ...
