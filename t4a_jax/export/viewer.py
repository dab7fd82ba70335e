"""`viewer.html`: one self-contained, offline file that plays a 4D Gaussian asset in
WebGL2 beside the multi-view video it was fitted to, with a second tab of point tracks.

    write_viewer("viewer.html", frames, fps=8, videos=video, tracks=tracks, prompt=p)

`frames` are the asset's Gaussians at each of its T frames (`Asset4D.at_frame`; same
N). The page (`viewer.html` + `viewer.js` of this package, scripts and data inlined:
nothing is fetched at view time, so it works from `file://`) starts playing on open;
drag orbits, the wheel zooms, a button plays/pauses and a slider picks the frame; the
generated views (`videos` [V, F, S, S, 3] uint8) are shown as images switched to the
same frame. The tracks tab draws `tracks` (`Tracks`: [V, F, P, 2] pixels of the videos,
visibility [V, F, P]) over the videos.

Data and size budget: per frame 6 bytes per Gaussian (centres as uint16 in the asset's
box: steps of (box extent) / 65535) plus 3 bytes of colour when the colour changes over
time (4D SH; else 3 bytes once), and per Gaussian 29 bytes (scales and quaternion as
float32 at the canonical pose, opacity as uint8); base64 adds a third. So a 20,000
Gaussian, 16-frame asset takes about 4 MB, plus the videos' JPEG frames (quality
`jpeg_quality`). The viewer keeps the canonical scales and rotations (the field's
changes to them are small) and degree-0 colour (no view dependence): say so where it
matters. `window.t4aReady` is set once the first frame is drawn; `window.t4a` has
`setFrame(f)`, `setCamera(viewmat16, K9, width, height)` (row-major, the project's
camera convention) and `alpha()` (the canvas coverage as base64 uint8 [H, W]), which
the browser test uses.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from importlib import resources
from typing import Sequence

import numpy as np

from t4a_jax.atomic import atomic_write
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.sh import SH_C0
from t4a_jax.video import jpeg_data_uri


@dataclasses.dataclass(frozen=True)
class Tracks:
    """Point tracks of a multi-view video: `points` [V, F, P, 2] (x, y pixels, centres at
    +0.5), `visible` [V, F, P] bool, made by `tracker` (a name shown on the page)."""

    points: np.ndarray
    visible: np.ndarray
    tracker: str


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def viewer_data(frames: Sequence[Gaussians], *, fps: float) -> dict:
    """The asset's part of the page data (module docstring)."""
    if not frames:
        raise ValueError("write_viewer: no frames")
    means = np.stack([np.asarray(g.means, np.float64) for g in frames])      # [T, N, 3]
    lo, hi = means.reshape(-1, 3).min(0), means.reshape(-1, 3).max(0)
    hi = np.where(hi > lo, hi, lo + 1e-6)
    quantised = np.round((means - lo) / (hi - lo) * 65535).astype(np.uint16)
    dc = np.stack([np.asarray(g.sh, np.float64)[:, 0] for g in frames])      # [T, N, 3]
    rgb = np.clip(0.5 + SH_C0 * dc, 0.0, 1.0)
    colours = np.round(rgb * 255).astype(np.uint8)
    if np.all(colours == colours[:1]):
        colours = colours[:1]
    canonical = frames[0]
    opacity = 1.0 / (1.0 + np.exp(-np.asarray(canonical.opacity_logits, np.float64)))
    return {"num_gaussians": int(means.shape[1]), "num_frames": int(means.shape[0]),
            "fps": float(fps), "lo": lo.tolist(), "hi": hi.tolist(),
            "positions": _b64(quantised), "colors": _b64(colours),
            "scales": _b64(np.exp(np.asarray(canonical.log_scales, np.float32))),
            "quats": _b64(np.asarray(canonical.quats, np.float32)),
            "opacity": _b64(np.round(opacity * 255).astype(np.uint8))}


def write_viewer(path: str, frames: Sequence[Gaussians], *, fps: float,
                 videos: np.ndarray | None = None, tracks: Tracks | None = None,
                 prompt: str = "", title: str = "t4a_jax 4D viewer",
                 camera: dict | None = None, jpeg_quality: int = 85) -> int:
    """Write the page (module docstring) to `path` atomically; returns its size in bytes.
    `camera`: the starting orbit {azimuth, elevation, distance, fovy} in degrees."""
    data = viewer_data(frames, fps=fps)
    data["prompt"] = prompt
    data["camera"] = camera or {}
    if videos is not None:
        videos = np.asarray(videos)
        if videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"write_viewer: videos {videos.shape}, expected [V, F, H, W, 3]")
        data["videos"] = [[jpeg_data_uri(f, jpeg_quality) for f in view] for view in videos]
    if tracks is not None:
        if videos is None:
            raise ValueError("write_viewer: tracks are drawn over the videos; pass videos")
        points = np.asarray(tracks.points, np.float32)
        if points.shape[:2] != videos.shape[:2] or points.shape[-1] != 2:
            raise ValueError(f"write_viewer: tracks {points.shape} do not match the videos "
                             f"{videos.shape[:2]} (views, frames)")
        data["tracks"] = {"points": np.round(points, 2).tolist(),
                          "visible": np.asarray(tracks.visible).astype(int).tolist(),
                          "size": [int(videos.shape[3]), int(videos.shape[2])],
                          "tracker": tracks.tracker}
    package = resources.files(__package__)
    page = (package.joinpath("viewer.html").read_text(encoding="utf-8")
            .replace("__TITLE__", _escape(title))
            .replace("__VIEWER_JS__", package.joinpath("viewer.js").read_text(encoding="utf-8"))
            .replace("__DATA__", json.dumps(data, separators=(",", ":")).replace("</", "<\\/")))
    encoded = page.encode("utf-8")
    with atomic_write(path) as file:
        file.write(encoded)
    return len(encoded)


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))
